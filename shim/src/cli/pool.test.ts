// `stencil pool ...` and `stencil template ...` run natively through bin/stencil, on a real template
// tmpfs holding real templates of a tiny guest (factory/testing/tiny-template.ts): a Linux guest
// needs the emulated host (integration-tests/vm/pool-cli.test.ts builds one with `pool init`).
// Needs root (it mounts tmpfs).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../../runtime-config/src/config.js';
import { podShapeFromConfig, templateSpecOfShape } from '../factory/pod-shape.js';
import { type TemplateRecord, TemplateStore } from '../factory/template-store.js';
import { tinyCountingKernel, tinyTemplateBuilder } from '../factory/testing/tiny-template.js';
import { ensureTmpfs } from '../factory/tmpfs.js';
import { MicroVm } from '../hypervisor/microvm.js';
import { mountAt, unmountAllUnder } from '../util/mounts.js';
import { repoRoot } from '../util/paths.js';
import type { PoolStatus, TemplateReport } from './template-report.js';

const STENCIL = path.join(repoRoot(), 'bin', 'stencil');
const dir = fs.mkdtempSync('/dev/shm/stencil-pool-cli-');
const kernel = path.join(dir, 'vmlinux');
const initrd = path.join(dir, 'initrd');

function stencil(...args: string[]) {
  const r = spawnSync(process.execPath, [STENCIL, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, all: `${r.stdout}${r.stderr}` };
}

/** A configuration file for the tiny guest, its templates in `templates`; returns its path. */
function writeConfig(name: string, templates: string, extra = ''): string {
  const file = path.join(dir, `${name}.toml`);
  const text = `[hypervisor]\nkernel = "${kernel}"\ninitrd = "${initrd}"\ndefault_memory = "32M"\n[factory]\ntemplate_dir = "${templates}"\n${extra}`;
  fs.writeFileSync(file, text);
  return file;
}

before(() => {
  fs.writeFileSync(kernel, tinyCountingKernel());
  fs.writeFileSync(initrd, 'not really an initramfs');
});
after(async () => {
  assert.deepEqual(await unmountAllUnder(dir), []);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('stencil pool and template commands (tiny-guest templates)', () => {
  const templates = path.join(dir, 'templates');
  const config = writeConfig('pool', templates, 'template_dir_size = "256M"\n');
  const hv = parseConfig(fs.readFileSync(config, 'utf8'), config).hypervisor;
  const store = new TemplateStore(templates);
  let small: TemplateRecord;
  let wide: TemplateRecord;
  let clone: MicroVm | undefined;
  after(async () => void (await clone?.destroy()));

  before(async () => {
    // The tmpfs `pool init` would mount, and templates of the shapes it would make.
    await ensureTmpfs(templates, 256 * 2 ** 20);
    small = (await store.create(templateSpecOfShape(podShapeFromConfig(hv)), tinyTemplateBuilder)).record;
    wide = (await store.create(templateSpecOfShape(podShapeFromConfig(hv, { vcpus: 2 })), tinyTemplateBuilder)).record;
    store.recordMiss({ ...small.inputs, vcpus: 4 });
  });

  it('pool init finds the templates of the configuration and builds nothing', () => {
    const r = stencil('pool', 'init', '--config', config);
    assert.equal(r.code, 0, r.all);
    assert.match(r.stdout, new RegExp(`^template ${small.key} \\(1 vCPU, 32M\\): exists, made \\d+s ago; nothing built$`, 'm'));
    assert.match(r.stdout, /: 0 built, 1 already there, in \d+\.\d s$/m);
    const both = stencil('pool', 'init', '--config', config, '--shape', '1x32M,2x32M');
    assert.equal(both.code, 0, both.all);
    assert.match(both.stdout, new RegExp(`template ${wide.key} \\(2 vCPUs, 32M\\): exists`));
    assert.match(both.stdout, /0 built, 2 already there/);
    assert.equal(fs.readdirSync(templates).filter((f) => f.startsWith('.build-')).length, 0);
    assert.equal(mountAt(templates)?.fstype, 'tmpfs', 'the tmpfs is still the one mounted');
    assert.equal(stencil('pool', 'init', '--config', config).stdout.match(/exists/g)?.length, 1);
  });

  it('template list shows both, as a table and as JSON', () => {
    const table = stencil('template', 'list', '--config', config);
    assert.equal(table.code, 0, table.all);
    assert.match(table.stdout, /^KEY +VCPUS +MEMORY +AGE +SIZE +CLONES +RUNNING +STATUS$/m);
    assert.match(table.stdout, new RegExp(`^${small.key}  1 +32M .* ready$`, 'm'));
    const json = JSON.parse(stencil('template', 'list', '--json', '--config', config).stdout) as TemplateReport[];
    assert.deepEqual(json.map((t) => [t.key, t.vcpus, t.memoryBytes]).sort(), [[small.key, 1, 32 * 2 ** 20], [wide.key, 2, 32 * 2 ** 20]].sort());
    for (const t of json) assert.ok(t.sizeBytes > 0, `${t.key} occupies the tmpfs`);
  });

  it('pool status counts a running clone’s shared and private memory, the misses and the tmpfs', async () => {
    clone = MicroVm.restore('pool-cli-clone', { restoreFrom: small.dir });
    store.recordClone(small.key);
    clone.start();
    await new Promise((resolve) => setTimeout(resolve, 100)); // the guest writes its counter page
    const status = JSON.parse(stencil('pool', 'status', '--json', '--config', config).stdout) as PoolStatus;
    assert.equal(status.templateDir, templates);
    assert.equal(status.misses, 1);
    assert.deepEqual({ ...status.tmpfs, usedBytes: 0, freeBytes: 0 }, { mountPoint: true, tmpfs: true, mountedByStencil: true, sizeBytes: 256 * 2 ** 20, usedBytes: 0, freeBytes: 0 });
    assert.ok(status.tmpfs!.usedBytes >= small.sizeBytes + wide.sizeBytes);
    const mine = status.templates.find((t) => t.key === small.key)!;
    assert.equal(mine.clonesServed, 1);
    assert.equal(mine.stale, null);
    assert.equal(mine.liveClones.processes, 1, 'this test process maps the template memory');
    assert.ok(mine.liveClones.privateBytes >= 4096, 'the counter page is the clone’s own copy');
    assert.ok(mine.liveClones.sharedBytes > 0, 'the loaded kernel page is the template’s');
    assert.equal(status.templates.find((t) => t.key === wide.key)!.liveClones.processes, 0);
    const text = stencil('pool', 'status', '--config', config);
    assert.equal(text.code, 0, text.all);
    assert.match(text.stdout, /tmpfs mounted by Stencil, 256 M: /);
    assert.match(text.stdout, /^pods that found no template \(booted from scratch or refused\): 1$/m);
    assert.match(text.stdout, new RegExp(`^template ${small.key}  1 vCPU, 32M$`, 'm'));
    assert.match(text.stdout, /^ {2}clones +1 served; 1 running: .* shared with the template, .* private \(PSS .*\)$/m);
  });

  it('template inspect prints what the template was made from, the VMM config and its use', () => {
    const r = stencil('template', 'inspect', small.key, '--config', config);
    assert.equal(r.code, 0, r.all);
    const doc = JSON.parse(r.stdout) as { key: string; inputs: { vcpus: number; kernel: string }; vmmConfig: { vcpus: number; memoryBytes: number }; stats: { clonesServed: number; liveClones: { processes: number } } };
    assert.equal(doc.key, small.key);
    assert.deepEqual([doc.inputs.vcpus, doc.inputs.kernel], [1, kernel]);
    assert.deepEqual([doc.vmmConfig.vcpus, doc.vmmConfig.memoryBytes], [1, 32 * 2 ** 20]);
    assert.deepEqual([doc.stats.clonesServed, doc.stats.liveClones.processes], [1, 1]);
  });

  it('refuses bad input, naming what is wrong, with exit code 1', () => {
    const cases: Array<[string[], RegExp]> = [
      [['template', 'inspect', 'abc'], /^stencil: 'abc' is not a template key \(20 hex digits\)$/m],
      [['template', 'rm', '0123456789abcdef0123'], new RegExp(`^stencil: no template 0123456789abcdef0123 in ${templates}$`, 'm')],
      [['template', 'rm'], /Not enough non-option arguments/],
      [['template', 'inspect', small.key, wide.key], /Unknown argument/],
      [['pool', 'init', '--memory', '12X'], /^stencil: --memory "12X" is not a size like 256M, 1G or 4096$/m],
      [['pool', 'init', '--memory', '0'], /^stencil: --memory must be more than 0$/m],
      [['pool', 'init', '--vcpus', 'two'], /^stencil: --vcpus must be a positive whole number of vCPUs, got "two"$/m],
      [['pool', 'init', '--vcpus', '1', '--vcpus', '2'], /--vcpus was given more than once; for several pod sizes use --shape/],
      [['pool', 'init', '--shape', '2x512M,lots'], /^stencil: --shape "lots" is not VCPUSxMEMORY, e.g. 2x512M$/m],
      [['pool', 'init', '--shape', '2x512M', '--vcpus', '2'], /--shape already gives the vCPUs and memory/],
      [['template', 'create', '--shape', '2x512M'], /Unknown argument: shape/],
      [['pool', 'status', '--config', path.join(dir, 'absent.toml')], /absent\.toml: configuration file does not exist/],
    ];
    for (const [args, expected] of cases) {
      const r = stencil(...args, ...(args.includes('--config') ? [] : ['--config', config]));
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.all}`);
      assert.match(r.stderr, expected, args.join(' '));
    }
    const notTmpfs = stencil('pool', 'init', '--config', writeConfig('proc', '/proc'));
    assert.equal(notTmpfs.code, 1, notTmpfs.all);
    assert.match(notTmpfs.stderr, /^stencil: \[factory\] template_dir \/proc \(.*proc\.toml\) cannot hold templates: template directory \/proc is a mount point but not a tmpfs$/m);
    fs.writeFileSync(path.join(dir, 'gone.toml'), fs.readFileSync(config, 'utf8').replace(kernel, path.join(dir, 'gone')));
    const gone = stencil('pool', 'init', '--config', path.join(dir, 'gone.toml'));
    assert.equal(gone.code, 1, gone.all);
    assert.match(gone.stderr, /^stencil: \[hypervisor\] kernel .*\/gone \(.*gone\.toml\) is not a readable file$/m);
  });

  it('template rm removes one; pool destroy removes the rest but leaves the tmpfs while a clone uses it', async () => {
    const rm = stencil('template', 'rm', wide.key, '--config', config);
    assert.equal(rm.code, 0, rm.all);
    assert.equal(rm.stdout, `removed template ${wide.key}\n`);
    assert.deepEqual(store.list().map((t) => t.key), [small.key]);

    const busy = stencil('pool', 'destroy', '--config', config);
    assert.equal(busy.code, 0, busy.all);
    assert.match(busy.stdout, new RegExp(`^removed template ${small.key} \\(1 vCPU, 32M\\); 1 running clone keeps its memory until it exits$`, 'm'));
    assert.match(busy.stdout, /: left mounted: running clones still use memory on it/);
    assert.deepEqual(store.list(), []);
    assert.equal(store.misses(), 0, 'the miss count starts over');
    assert.equal(clone!.state, 'running', 'the clone runs on');
    await clone!.destroy();
    clone = undefined;

    const done = stencil('pool', 'destroy', '--config', config);
    assert.equal(done.code, 0, done.all);
    assert.match(done.stdout, /: unmounted its tmpfs$/m);
    assert.equal(mountAt(templates), undefined);
    assert.match(stencil('pool', 'destroy', '--config', config).stdout, /not a mount point: nothing to unmount/);
  });
});

describe('stencil pool init on a template tmpfs too small for the template', () => {
  it('fails naming the space, leaves no half-built template, and pool destroy unmounts', () => {
    const templates = path.join(dir, 'tiny-tmpfs');
    const config = writeConfig('full', templates, 'template_dir_size = "16M"\n');
    const r = stencil('pool', 'init', '--config', config, '--memory', '256M');
    assert.equal(r.code, 1, r.all);
    assert.match(
      r.stderr,
      /^stencil: building template [0-9a-f]{20} failed: guest RAM directory .*\/\.build-[0-9a-f]{20}-\d+ has only 16.0 MiB free, the VM needs 256.0 MiB \(template directory .*: 16 M free of 16 M\)$/m,
    );
    assert.equal(mountAt(templates)?.source, 'stencil-templates', 'pool init mounted the configured tmpfs');
    assert.deepEqual(fs.readdirSync(templates).filter((f) => !['.locks', '.digests.json'].includes(f)), []);
    assert.deepEqual(fs.readdirSync(path.join(templates, '.locks')), []);
    const destroyed = stencil('pool', 'destroy', '--config', config);
    assert.equal(destroyed.code, 0, destroyed.all);
    assert.match(destroyed.stdout, /unmounted its tmpfs/);
  });
});
