// The real guest kernel under a real KVM (directly, or inside the emulated host): boot, SMP,
// memory, virtio, power events, pause/resume and the RAM file's life cycle.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { assertScriptSucceeded, ConsoleCapture, guestSpec, runInGuest, withTimeout } from '../lib/guest.js';

describe('guest boot', () => {
  it('reaches /init and runs a command, then powers off', async () => {
    const run = await runInGuest('echo hello-from-guest');
    assert.match(run.console, /stencil-guest: init reached/);
    assert.equal(run.output.trim(), 'hello-from-guest');
    assertScriptSucceeded(run);
    assert.equal(run.exit.reason, 'poweroff');
  });

  it('boots a bzImage as well as a vmlinux', async () => {
    const { bzImage } = JSON.parse(fs.readFileSync('build/guest.json', 'utf8')) as { bzImage: string };
    const run = await runInGuest('echo bzimage-ok', { kernel: bzImage });
    assert.equal(run.output.trim(), 'bzimage-ok');
    assert.equal(run.exit.reason, 'poweroff');
  });

  it('sees as many CPUs as vCPUs were configured', async () => {
    for (const vcpus of [1, 2, 3]) {
      const run = await runInGuest('nproc; grep -c ^processor /proc/cpuinfo', { vcpus });
      assert.deepEqual(run.output.trim().split('\n'), [String(vcpus), String(vcpus)], `with ${vcpus} vCPUs`);
    }
  });

  it('finds its CPUs through the MP table when ACPI is off', async () => {
    const run = await runInGuest('nproc; dmesg | grep -c "MPTABLE: OEM ID: STENCIL"', {
      vcpus: 2,
      then: 'reboot',
      append: 'acpi=off',
    });
    assert.deepEqual(run.output.trim().split('\n'), ['2', '1']);
    assert.equal(run.exit.reason, 'reboot');
  });

  it('sees the configured amount of memory', async () => {
    for (const mib of [128, 512]) {
      const run = await runInGuest("awk '/MemTotal/ {print $2}' /proc/meminfo", { memoryBytes: mib * 2 ** 20 });
      const totalKib = Number(run.output.trim());
      // MemTotal is RAM minus what the kernel keeps for itself (its image, page tables, ...).
      assert.ok(totalKib <= mib * 1024, `MemTotal ${totalKib} KiB exceeds ${mib} MiB`);
      assert.ok(totalKib >= mib * 1024 - 48 * 1024, `MemTotal ${totalKib} KiB is far below ${mib} MiB`);
    }
  });

  it('gets entropy from virtio-rng (virtqueues and interrupts work end to end)', async () => {
    const run = await runInGuest('cat /sys/class/misc/hw_random/rng_current; head -c 4096 /dev/hwrng | od -An -v -tx1 | tr -d " \\n" | wc -c');
    const [current, hexChars] = run.output.trim().split('\n');
    assert.match(current, /^virtio_rng\.\d+$/);
    assert.equal(Number(hexChars), 8192);
  });

  it('ends with reason "reboot" when the guest reboots', async () => {
    const run = await runInGuest('true', { then: 'reboot' });
    assert.equal(run.exit.reason, 'reboot');
  });

  it('reports the script exit status and powers off with reason "poweroff"', async () => {
    const run = await runInGuest('exit 7', { then: 'poweroff' });
    assert.equal(run.status, 7);
    assert.equal(run.exit.reason, 'poweroff');
  });
});

describe('pause and resume', () => {
  it('pause stops guest progress and resume continues it', async () => {
    const vm = MicroVm.create(
      guestSpec('i=0; while [ $i -lt 100000 ]; do echo tick $i; i=$((i+1)); sleep 0.05; done', { vcpus: 2 }),
    );
    const console = new ConsoleCapture(vm);
    try {
      vm.start();
      await console.waitFor(/tick 20\b/);
      await withTimeout(vm.pause(), 10_000, 'vCPUs did not park', console);
      assert.equal(vm.state, 'paused');
      const lastTick = () => Math.max(...[...console.text.matchAll(/tick (\d+)/g)].map((m) => Number(m[1])));
      const atPause = lastTick();
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(lastTick(), atPause, 'the guest made progress while paused');
      vm.resume();
      await console.waitFor(new RegExp(`tick ${atPause + 10}\\b`), 60_000);
      assert.ok(lastTick() >= atPause + 10);
    } finally {
      const exit = await vm.destroy();
      assert.equal(exit.reason, 'stopped');
    }
  });
});

describe('guest RAM on tmpfs', () => {
  it('exists with the configured size while running and is removed afterwards', async () => {
    const size = 192 * 2 ** 20;
    const vm = MicroVm.create(guestSpec('sleep 600', { memoryBytes: size }));
    const console = new ConsoleCapture(vm);
    const ramPath = vm.memoryPath;
    try {
      assert.ok(ramPath.startsWith('/dev/shm/'), `RAM file ${ramPath} is not on /dev/shm`);
      assert.equal(fs.statSync(ramPath).size, size);
      vm.start();
      await console.waitFor(/stencil-guest: init reached/);
      const st = fs.statSync(ramPath);
      assert.equal(st.size, size);
      assert.ok(st.blocks * 512 > 8 * 2 ** 20, 'the guest wrote into its RAM file');
      assert.equal(fs.statfsSync(ramPath).type, 0x01021994, 'RAM file is on tmpfs');
    } finally {
      await vm.destroy();
    }
    assert.equal(fs.existsSync(ramPath), false, `${ramPath} was left behind`);
  });
});
