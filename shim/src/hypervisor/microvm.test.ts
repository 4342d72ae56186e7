// Bad input to the hypervisor layer: each gets a typed error naming the problem, and nothing
// (file descriptors, RAM files) is left behind. Uses the real /dev/kvm but never runs a guest.
import assert from 'node:assert/strict';
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
import { tinyElfKernel } from './testing.js';

const openFds = () => fs.readdirSync('/proc/self/fd').length;

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

  it('rejects zero vCPUs', () => {
    expectNoLeak(() => MicroVm.create(spec({ vcpus: 0 })), InvalidVmConfigError, /vcpus must be an integer >= 1/);
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

  const isRoot = process.getuid?.() === 0;
  it('reports /dev/kvm without permission', { skip: isRoot && 'root bypasses file modes' }, () => {
    const noPerm = path.join(dir, 'kvm-no-perm');
    fs.writeFileSync(noPerm, '');
    fs.chmodSync(noPerm, 0);
    process.env.STENCIL_KVM_DEVICE = noPerm;
    try {
      expectNoLeak(() => MicroVm.create(spec()), KvmUnavailableError, /no permission/);
    } finally {
      delete process.env.STENCIL_KVM_DEVICE;
    }
  });
});
