// Bad input to the hypervisor layer: each gets a typed error naming the problem, and nothing
// (file descriptors, RAM files) is left behind. Uses the real /dev/kvm but never runs a guest.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  InvalidVmConfigError,
  KernelImageError,
  KvmUnavailableError,
  MemoryBackingError,
} from './errors.js';
import { MicroVm } from './microvm.js';
import type { VmSpec } from './types.js';
import { tinyElfKernel } from './testing/tiny-kernel.js';

const openFds = () => fs.readdirSync('/proc/self/fd').length;
const NOBODY = 65534;
/** Run by the unprivileged child: MicroVm.create(argv[1]) and a JSON report of what it threw and left. */
const CREATE_AND_REPORT = `
import fs from 'node:fs';
const { MicroVm } = await import(${JSON.stringify(new URL('./microvm.js', import.meta.url).href)});
const spec = JSON.parse(process.argv[1]);
const fds = () => fs.readdirSync('/proc/self/fd').length;
const report = { uid: process.getuid(), fdsBefore: fds() };
try {
  await MicroVm.create(spec).destroy();
} catch (err) {
  report.error = err.constructor.name;
  report.message = err.message;
}
report.fdsAfter = fds();
report.ramFiles = fs.readdirSync(spec.memoryDir);
process.stdout.write(JSON.stringify(report));
`;

describe('MicroVm input validation', () => {
  let dir: string;
  let memDir: string;
  let kernel: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-vm-test-'));
    memDir = fs.mkdtempSync('/dev/shm/stencil-vm-test-');
    // A minimal valid ELF64 x86-64 executable (never run).
    const elf = tinyElfKernel();
    kernel = path.join(dir, 'vmlinux');
    fs.writeFileSync(kernel, elf);
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(memDir, { recursive: true, force: true });
  });

  const spec = (o: Partial<VmSpec> = {}): VmSpec => ({
    name: 'validation',
    vcpus: 1,
    memoryBytes: 64 * 2 ** 20,
    kernel,
    cmdline: 'console=ttyS0',
    memoryDir: memDir,
    memoryBacking: 'tmpfs',
    virtioRng: true,
    ...o,
  });

  function expectNoLeak(make: () => unknown, errorType: new (...a: never[]) => Error, message: RegExp) {
    const before = openFds();
    assert.throws(make, (err: unknown) => {
      assert.ok(err instanceof errorType, `expected ${errorType.name}, got ${(err as Error)?.constructor?.name}: ${err}`);
      assert.match((err as Error).message, message);
      return true;
    });
    assert.equal(openFds(), before, 'file descriptors leaked');
    assert.deepEqual(fs.readdirSync(memDir), [], 'a RAM file was left behind');
  }

  it('creates and destroys a VM cleanly when the input is good', async () => {
    const before = openFds();
    const vm = MicroVm.create(spec());
    assert.equal(fs.statSync(vm.memoryPath).size, 64 * 2 ** 20);
    assert.match(vm.cmdline, /virtio_mmio\.device=4K@0xd0000000:5/);
    const exit = await vm.destroy();
    assert.equal(exit.reason, 'stopped');
    assert.equal(openFds(), before);
    assert.deepEqual(fs.readdirSync(memDir), []);
  });

  it('reports its setup phases and no exits before it starts', async () => {
    const vm = MicroVm.create(spec());
    const stats = vm.exitStats();
    assert.deepEqual(Object.keys(stats.setupPhasesMs), ['create-vm', 'guest-memory', 'devices', 'load-guest', 'vcpus']);
    assert.ok(Object.values(stats.setupPhasesMs).every((ms) => ms >= 0 && ms < 60_000), JSON.stringify(stats));
    assert.deepEqual(stats.exitsByReason, {});
    assert.deepEqual(stats.topIoPorts, []);
    assert.equal(stats.firstConsoleMs, -1);
    await vm.destroy();
    assert.throws(() => vm.exitStats(), /has been destroyed/);
  });

  it('rejects a missing kernel', () => {
    expectNoLeak(() => MicroVm.create(spec({ kernel: path.join(dir, 'nope') })), KernelImageError, /nope.*cannot be opened/);
  });

  it('rejects a corrupt kernel', () => {
    const bad = path.join(dir, 'corrupt');
    fs.writeFileSync(bad, Buffer.alloc(8192, 0x5a));
    expectNoLeak(() => MicroVm.create(spec({ kernel: bad })), KernelImageError, /neither an ELF vmlinux nor a bzImage/);
  });

  it('rejects memory that is not a multiple of the page size', () => {
    expectNoLeak(() => MicroVm.create(spec({ memoryBytes: 64 * 2 ** 20 + 512 })), InvalidVmConfigError, /multiple of the page size/);
  });

  it('rejects memory larger than the host', () => {
    const huge = Math.ceil((os.totalmem() * 2) / 4096) * 4096;
    expectNoLeak(() => MicroVm.create(spec({ memoryBytes: huge })), InvalidVmConfigError, /exceeds this host's RAM/);
  });

  it('rejects vCPU counts outside the VMM limits, naming the field and the limit', () => {
    expectNoLeak(() => MicroVm.create(spec({ vcpus: 0 })), InvalidVmConfigError, /^vcpus must be 1\.\.254, got 0$/);
    expectNoLeak(() => MicroVm.create(spec({ vcpus: 255 })), InvalidVmConfigError, /^vcpus must be 1\.\.254, got 255$/);
    for (const vcpus of [2.5, -1, NaN]) expectNoLeak(() => MicroVm.create(spec({ vcpus })), InvalidVmConfigError, /^vcpus must be a non-negative integer/);
  });

  it('rejects a missing tmpfs directory', () => {
    expectNoLeak(() => MicroVm.create(spec({ memoryDir: '/nonexistent/stencil' })), MemoryBackingError, /\/nonexistent\/stencil does not exist/);
  });

  it('reports a missing /dev/kvm', () => {
    process.env.STENCIL_KVM_DEVICE = '/nonexistent/kvm';
    try {
      expectNoLeak(() => MicroVm.create(spec()), KvmUnavailableError, /\/nonexistent\/kvm does not exist/);
    } finally {
      delete process.env.STENCIL_KVM_DEVICE;
    }
  });

  it('creates a vsock device listening on its Unix socket, and removes the socket on destroy', async () => {
    const before = openFds();
    const uds = path.join(dir, 'v.sock');
    const vm = MicroVm.create(spec({ vsock: { guestCid: 3, udsPath: uds } }));
    assert.ok(fs.statSync(uds).isSocket(), 'the host-side socket exists once the VM does');
    assert.equal(vm.cmdline.match(/virtio_mmio\.device=/g)?.length, 2, 'rng + vsock');
    await vm.destroy();
    assert.equal(fs.existsSync(uds), false);
    assert.equal(openFds(), before);
  });

  it('rejects bad vsock settings, naming the field', () => {
    for (const guestCid of [0, 1, 2, 2 ** 32 - 1, 3.5, NaN])
      expectNoLeak(() => MicroVm.create(spec({ vsock: { guestCid, udsPath: path.join(dir, 'x.sock') } })), InvalidVmConfigError, /vsock\.guestCid/);
    expectNoLeak(() => MicroVm.create(spec({ vsock: { guestCid: 3, udsPath: '' } })), InvalidVmConfigError, /vsock\.udsPath/);
    expectNoLeak(
      () => MicroVm.create(spec({ vsock: { guestCid: 3, udsPath: path.join(dir, 'missing', 'v.sock') } })),
      InvalidVmConfigError,
      /vsock\.udsPath .*missing/,
    );
    const plain = path.join(dir, 'plain-file');
    fs.writeFileSync(plain, '');
    expectNoLeak(() => MicroVm.create(spec({ vsock: { guestCid: 3, udsPath: plain } })), InvalidVmConfigError, /not a socket/);
  });

  // File modes do not stop root, and CI runs as root: the VM is created in a child process as an
  // unprivileged user (setpriv, as nobody) whenever this test runs as root.
  it('reports /dev/kvm without permission (as an unprivileged user)', () => {
    const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-vm-user-'));
    try {
      fs.chmodSync(userDir, 0o755);
      const noPerm = path.join(userDir, 'kvm-no-perm');
      fs.writeFileSync(noPerm, '');
      fs.chmodSync(noPerm, 0);
      const userKernel = path.join(userDir, 'vmlinux');
      fs.copyFileSync(kernel, userKernel);
      fs.chmodSync(userKernel, 0o644);
      const userMemDir = path.join(userDir, 'mem');
      fs.mkdirSync(userMemDir, { mode: 0o700 });
      const child = [process.execPath, '--input-type=module', '-e', CREATE_AND_REPORT, JSON.stringify(spec({ kernel: userKernel, memoryDir: userMemDir }))];
      const isRoot = process.getuid?.() === 0;
      if (isRoot) fs.chownSync(userMemDir, NOBODY, NOBODY);
      const argv = isRoot ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', ...child] : child;
      const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, STENCIL_KVM_DEVICE: noPerm } });
      assert.equal(r.status, 0, `the child failed: ${r.stderr || r.error?.message}`);
      const report = JSON.parse(r.stdout) as { uid: number; error?: string; message?: string; fdsBefore: number; fdsAfter: number; ramFiles: string[] };
      assert.notEqual(report.uid, 0, 'the child ran as root');
      assert.equal(report.error, 'KvmUnavailableError', JSON.stringify(report));
      assert.match(report.message!, /no permission to open .*kvm-no-perm/);
      assert.equal(report.fdsAfter, report.fdsBefore, 'file descriptors leaked');
      assert.deepEqual(report.ramFiles, [], 'a RAM file was left behind');
    } finally {
      fs.rmSync(userDir, { recursive: true, force: true });
    }
  });
});
