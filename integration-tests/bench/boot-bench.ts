// `make bench` (boot figure): cold boot to the guest's /init, Stencil vs QEMU microvm, same
// kernel, initramfs, memory and vCPUs, same (real or emulated) host, runs interleaved.
// Prints one JSON line per figure: medians and the Stencil/QEMU ratio (goal: <= 0.5).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { builtGuestArtifacts } from '../../shim/src/util/paths.js';
import { ConsoleCapture, guestSpec, withTimeout } from '../lib/guest.js';

const RUNS = Number(process.env.STENCIL_BENCH_RUNS ?? 5);
const MEMORY = '256M';
const VCPUS = 2;
const MARKER = /stencil-guest: init reached/;
const TIMEOUT_MS = 120_000;
// The same guest work in both VMMs: reach /init, then end the VM at once.
const GUEST_APPEND = `stencil_run=${Buffer.from('true').toString('base64')} stencil_then=reboot`;

async function stencilBoot(): Promise<number> {
  const t0 = performance.now();
  const vm = MicroVm.create(guestSpec('true', { vcpus: VCPUS, memoryBytes: 256 * 2 ** 20, then: 'reboot' }));
  const console = new ConsoleCapture(vm);
  try {
    vm.start();
    await console.waitFor(MARKER, TIMEOUT_MS);
    return performance.now() - t0;
  } finally {
    await vm.destroy();
  }
}

async function qemuBoot(): Promise<number> {
  const { initrd } = builtGuestArtifacts();
  const guest = JSON.parse(fs.readFileSync('build/guest.json', 'utf8')) as { bzImage: string };
  const args = [
    '-M', 'microvm,acpi=off', '-enable-kvm', '-cpu', 'host', '-smp', String(VCPUS), '-m', MEMORY,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio',
    '-kernel', guest.bzImage, '-initrd', initrd,
    '-append', `console=ttyS0 reboot=k panic=1 tsc=reliable no_timer_check ${GUEST_APPEND}`,
  ];
  const t0 = performance.now();
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  try {
    return await withTimeout(
      new Promise<number>((resolve, reject) => {
        qemu.stdout.on('data', (d: Buffer) => {
          out += d.toString('latin1');
          if (MARKER.test(out)) resolve(performance.now() - t0);
        });
        qemu.stderr.on('data', (d: Buffer) => (out += d.toString('latin1')));
        qemu.on('exit', (code) => reject(new Error(`qemu exited (${code}) before /init:\n${out.slice(-2000)}`)));
      }),
      TIMEOUT_MS,
      'QEMU guest did not reach /init',
    );
  } finally {
    qemu.kill('SIGKILL');
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const stencil: number[] = [];
  const qemu: number[] = [];
  await stencilBoot();  // warm the page cache for both: kernel and initramfs files
  for (let i = 0; i < RUNS; i++) {
    stencil.push(await stencilBoot());
    qemu.push(await qemuBoot());
  }
  const s = median(stencil);
  const q = median(qemu);
  process.stdout.write(
    JSON.stringify({
      figure: 'cold_boot_to_init',
      unit: 'ms',
      runs: RUNS,
      vcpus: VCPUS,
      memory: MEMORY,
      stencil_median: Math.round(s),
      qemu_microvm_median: Math.round(q),
      ratio: Number((s / q).toFixed(3)),
      goal_ratio_max: 0.5,
      stencil_runs: stencil.map(Math.round),
      qemu_runs: qemu.map(Math.round),
    }) + '\n',
  );
}

main().catch((err) => {
  process.stderr.write(`boot bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
