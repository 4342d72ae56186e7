// Template save and copy-on-write restore through the addon on the real /dev/kvm, with a tiny
// guest counting in RAM: the snapshot files, paused starts, and typed errors for bad snapshots.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fromNative, InvalidVmConfigError, SnapshotError, VmStateError } from './errors.js';
import { MicroVm } from './microvm.js';
import { loadAddon, type NativeEvent, type NativeVm } from './native.js';
import { tinyElfKernel } from './testing/tiny-kernel.js';

// mov ebx, 0x200000; 1: inc qword [rbx]; jmp 1b
const COUNTER_LOOP = [0xbb, 0x00, 0x00, 0x20, 0x00, 0x48, 0xff, 0x03, 0xeb, 0xfb];

/** A NativeVm with a promise for its next 'paused' event. */
function withPauseEvents(make: (onEvent: (type: NativeEvent) => void) => NativeVm) {
  const waiters: Array<() => void> = [];
  const vm = make((type) => {
    if (type === 'paused') for (const w of waiters.splice(0)) w();
  });
  const nextPause = () => new Promise<void>((resolve) => waiters.push(resolve));
  return { vm, nextPause };
}

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

function expectError(f: () => unknown, type: new (...a: never[]) => Error, message: RegExp) {
  assert.throws(
    () => {
      try {
        f();
      } catch (err) {
        throw fromNative(err);
      }
    },
    (err: unknown) => {
      assert.ok(err instanceof type, `expected ${type.name}, got ${(err as Error)?.constructor?.name}: ${err}`);
      assert.match((err as Error).message, message);
      return true;
    },
  );
}

describe('native snapshot and restore', () => {
  let dir: string;
  let snapshot: string;
  let kernel: string;
  const { NativeVm } = loadAddon();

  before(() => {
    dir = fs.mkdtempSync('/dev/shm/stencil-snapshot-ts-');
    snapshot = path.join(dir, 'template');
    fs.mkdirSync(snapshot);
    kernel = path.join(dir, 'vmlinux');
    fs.writeFileSync(kernel, tinyElfKernel(COUNTER_LOOP));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('saves a paused VM as a template and restores clones that leave its memory untouched', async () => {
    const template = withPauseEvents(
      (onEvent) =>
        new NativeVm(
          {
            vcpus: 1,
            memoryBytes: 64 * 2 ** 20,
            memoryBacking: 'tmpfs',
            memoryDir: snapshot,
            memoryFileName: 'memory',
            kernel,
            initrd: '',
            cmdline: 'console=ttyS0',
            virtioRng: true,
            disks: [],
            shares: [],
          },
          onEvent,
        ),
    );
    template.vm.start();
    await sleep(50);
    const paused = template.nextPause();
    template.vm.pause();
    await paused;
    template.vm.saveSnapshot(snapshot);
    assert.deepEqual(fs.readdirSync(snapshot).sort(), ['config', 'memory', 'state']);
    const config = JSON.parse(fs.readFileSync(path.join(snapshot, 'config'), 'utf8'));
    assert.equal(config.vcpus, 1);
    assert.equal(config.memoryBytes, 64 * 2 ** 20);
    assert.deepEqual(
      config.devices.map((d: { kind: string }) => d.kind),
      ['serial', 'i8042', 'acpi-pm', 'virtio-rng'],
    );
    assert.equal(config.kernel.sha256, sha256(kernel));
    expectError(() => template.vm.resume(), VmStateError, /template saved in .* cannot run again/);
    template.vm.destroy();
    const memoryHash = sha256(path.join(snapshot, 'memory'));

    const clone = withPauseEvents((onEvent) => new NativeVm({ restoreFrom: snapshot, vcpus: 1 }, onEvent));
    const parked = clone.nextPause();
    clone.vm.start({ paused: true });
    await parked;
    clone.vm.resume();
    await sleep(50);
    const pausedAgain = clone.nextPause();
    clone.vm.pause();
    await pausedAgain;
    clone.vm.destroy();
    assert.equal(sha256(path.join(snapshot, 'memory')), memoryHash, 'a clone wrote to the template memory');
  });

  it('lets MicroVm save only a paused VM, and restores it paused until resumed', async () => {
    const template = MicroVm.create({
      name: 'microvm-template',
      vcpus: 1,
      memoryBytes: 64 * 2 ** 20,
      kernel,
      cmdline: 'console=ttyS0',
      memoryDir: dir,
      memoryBacking: 'tmpfs',
      virtioRng: true,
    });
    template.start();
    expectError(() => template.saveSnapshot(dir), VmStateError, /cannot save a snapshot of VM microvm-template: it is running/);
    await template.pause();
    const target = path.join(dir, 'microvm-snapshot');
    fs.mkdirSync(target);
    template.saveSnapshot(target);
    await template.destroy();
    const clone = MicroVm.restore('microvm-clone', { restoreFrom: target });
    assert.equal(clone.state, 'created');
    clone.start({ paused: true });
    const state = (): string => clone.state;  // read afresh: the 'paused' event arrives asynchronously
    for (let i = 0; i < 200 && state() !== 'paused'; i++) await sleep(10);
    assert.equal(state(), 'paused');
    clone.resume();
    assert.equal(clone.state, 'running');
    assert.equal((await clone.destroy()).reason, 'stopped');
  });

  it('restores into a shell created ahead, once', async () => {
    const { NativeVmShell } = loadAddon();
    const shell = new NativeVmShell(1, 64 * 2 ** 20);
    const clone = withPauseEvents((onEvent) => new NativeVm({ restoreFrom: snapshot, shell }, onEvent));
    const parked = clone.nextPause();
    clone.vm.start({ paused: true });
    await parked;
    clone.vm.destroy();
    expectError(() => new NativeVm({ restoreFrom: snapshot, shell }, () => {}), VmStateError, /already used/);
    const wrongSize = new NativeVmShell(1, 32 * 2 ** 20);
    expectError(() => new NativeVm({ restoreFrom: snapshot, shell: wrongSize }, () => {}), SnapshotError, /reserved 33554432 bytes/);
    expectError(() => new NativeVmShell(0, 4096), InvalidVmConfigError, /positive integers/);
  });

  it('refuses a restore that asks for another vCPU count or memory size', () => {
    expectError(() => new NativeVm({ restoreFrom: snapshot, vcpus: 2 }, () => {}), SnapshotError, /vCPU count 1, the restoring VM asks for 2/);
    expectError(() => new NativeVm({ restoreFrom: snapshot, memoryBytes: 2 ** 30 }, () => {}), SnapshotError, /memory size/);
  });

  it('refuses a corrupt state file and a missing snapshot', () => {
    const corrupt = path.join(dir, 'corrupt');
    fs.mkdirSync(corrupt);
    for (const f of ['config', 'state']) fs.copyFileSync(path.join(snapshot, f), path.join(corrupt, f));
    const state = fs.readFileSync(path.join(corrupt, 'state'));
    state[100] ^= 0xff;
    fs.writeFileSync(path.join(corrupt, 'state'), state);
    expectError(() => new NativeVm({ restoreFrom: corrupt }, () => {}), SnapshotError, /checksum mismatch/);
    expectError(() => new NativeVm({ restoreFrom: path.join(dir, 'nope') }, () => {}), SnapshotError, /nope\/state/);
  });
});
