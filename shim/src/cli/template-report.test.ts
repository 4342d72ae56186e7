// The data and text of `stencil pool status` and `stencil template list`.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TemplateRecord } from '../factory/template-store.js';
import { formatAge, formatList, formatStatus, type PoolStatus, templateReport } from './template-report.js';

const MiB = 2 ** 20;
const record = (key: string, overrides: Partial<TemplateRecord> = {}): TemplateRecord => ({
  key,
  dir: `/run/t/${key}`,
  inputs: { format: 1, kernelSha256: 'k', initrdSha256: 'i', kernel: '/g/vmlinux', initrd: '/g/initrd', vcpus: 1, memoryBytes: 256 * MiB, cmdline: 'console=ttyS0', devices: 'rng,vsock' },
  createdAt: new Date('2025-01-01T00:00:00Z'),
  sizeBytes: 61 * MiB,
  clonesServed: 12,
  ...overrides,
});
const now = new Date('2025-01-01T02:05:30Z');

describe('templateReport', () => {
  it('sums the memory of the processes mapping the template and keeps its inputs', () => {
    const clones = [
      { pid: 10, rssBytes: 50 * MiB, pssBytes: 20 * MiB, sharedBytes: 45 * MiB, privateBytes: 5 * MiB },
      { pid: 11, rssBytes: 40 * MiB, pssBytes: 15 * MiB, sharedBytes: 38 * MiB, privateBytes: 2 * MiB },
    ];
    const r = templateReport(record('a'.repeat(20)), clones, now);
    assert.deepEqual(r.liveClones, { processes: 2, rssBytes: 90 * MiB, pssBytes: 35 * MiB, sharedBytes: 83 * MiB, privateBytes: 7 * MiB });
    assert.equal(r.ageSeconds, 2 * 3600 + 5 * 60 + 30);
    assert.equal(r.stale, null);
    assert.equal(r.createdAt, '2025-01-01T00:00:00.000Z');
    assert.deepEqual([r.vcpus, r.memoryBytes, r.kernel, r.initrd, r.clonesServed, r.sizeBytes], [1, 256 * MiB, '/g/vmlinux', '/g/initrd', 12, 61 * MiB]);
    assert.equal(templateReport(record('b'.repeat(20), { createdAt: new Date(now.getTime() + 5000) }), [], now).ageSeconds, 0, 'a clock step back is no negative age');
  });

  it('formats ages coarsely', () => {
    assert.deepEqual([0, 59, 60, 3599, 3600, 7530, 86400 * 3 + 3600 * 5 + 7].map(formatAge), ['0s', '59s', '1m', '59m', '1h0m', '2h5m', '3d5h']);
  });
});

describe('formatStatus', () => {
  const ready = templateReport(record('a'.repeat(20)), [{ pid: 10, rssBytes: 50 * MiB, pssBytes: 20 * MiB, sharedBytes: 45 * MiB, privateBytes: 5 * MiB }], now);
  const stale = templateReport(record('b'.repeat(20), { stale: 'its kernel /g/vmlinux changed since the template was made', clonesServed: 0, inputs: { ...record('b').inputs, vcpus: 2 } }), [], now);
  const status: PoolStatus = {
    templateDir: '/run/t',
    config: '/etc/stencil/configuration.toml',
    tmpfs: { mountPoint: true, tmpfs: true, mountedByStencil: true, sizeBytes: 4 * 2 ** 30, usedBytes: 61 * MiB, freeBytes: 4 * 2 ** 30 - 61 * MiB },
    misses: 3,
    templates: [ready, stale],
  };

  it('shows the tmpfs, the misses and each template with its clones and staleness', () => {
    assert.equal(
      formatStatus(status),
      [
        'template directory /run/t: tmpfs mounted by Stencil, 4 G: 61 M used, 3.9 G free',
        'configuration: /etc/stencil/configuration.toml',
        'pods that found no template (booted from scratch or refused): 3',
        '',
        `template ${'a'.repeat(20)}  1 vCPU, 256M`,
        '  kernel     /g/vmlinux',
        '  initramfs  /g/initrd',
        '  age        2h5m (created 2025-01-01T00:00:00.000Z)',
        '  size       61 M on the tmpfs',
        '  clones     12 served; 1 running: 45 M shared with the template, 5 M private (PSS 20 M)',
        '',
        `template ${'b'.repeat(20)}  2 vCPUs, 256M  STALE`,
        '  kernel     /g/vmlinux',
        '  initramfs  /g/initrd',
        '  age        2h5m (created 2025-01-01T00:00:00.000Z)',
        '  size       61 M on the tmpfs',
        '  clones     0 served; none running',
        `  stale      its kernel /g/vmlinux changed since the template was made; it serves no pod (\`stencil template rm ${'b'.repeat(20)}\`)`,
        '',
      ].join('\n'),
    );
  });

  it('says where the template directory is when it is no tmpfs of its own, or missing', () => {
    const first = (s: PoolStatus) => formatStatus(s).split('\n')[0];
    const tmpfs = status.tmpfs!;
    assert.match(first({ ...status, tmpfs: { ...tmpfs, mountedByStencil: false } }), /: tmpfs mounted by someone else, /);
    assert.match(first({ ...status, tmpfs: { ...tmpfs, mountPoint: false, mountedByStencil: false } }), /: on the tmpfs of a parent directory \(not mounted by Stencil\), /);
    assert.match(first({ ...status, tmpfs: { ...tmpfs, tmpfs: false, mountedByStencil: false } }), /: NOT on a tmpfs, /);
    assert.equal(first({ ...status, tmpfs: null }), 'template directory /run/t: does not exist yet (`stencil pool init` makes it)');
    assert.match(formatStatus({ ...status, templates: [] }), /\nno templates \(`stencil pool init` makes them\)\n$/);
  });

  it('lists templates as an aligned table', () => {
    assert.equal(
      formatList(status.templates),
      [
        'KEY                   VCPUS  MEMORY  AGE   SIZE  CLONES  RUNNING  STATUS',
        `${'a'.repeat(20)}  1      256M    2h5m  61 M  12      1        ready`,
        `${'b'.repeat(20)}  2      256M    2h5m  61 M  0       0        stale: its kernel /g/vmlinux changed since the template was made`,
        '',
      ].join('\n'),
    );
    assert.equal(formatList([]), 'no templates (`stencil pool init` makes them)\n');
  });
});
