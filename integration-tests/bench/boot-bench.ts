// `make bench` (boot figures): cold boot to the guest's first line of output, Stencil vs QEMU
// microvm on the same (real or emulated) host, with the same kernel image, initramfs, memory, vCPUs,
// guest command and kernel command line apart from device declarations. The image is the bzImage
// for both: QEMU's microvm takes an uncompressed vmlinux only through PVH, which the guest kernel is
// not built with (guest/kernel/stencil.config has no CONFIG_PVH). Every variant boots once to warm
// up, then the variants run interleaved, RUNS rounds; figures are medians.
// One JSON line per figure:
//   cold_boot_to_guest_output  Stencil in-process (MicroVm.create to the line), `stencil vm run` and
//                              QEMU as whole processes (spawn to the line); ratios and goal_met.
//   boot_breakdown             where Stencil's boot goes: VMM setup phases, start to the first console
//                              byte, exits by reason and the busiest ports/addresses, KVM's counters;
//                              and what a vmlinux, ACPI off (MP table only) or no `quiet` change.
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { VmExitStats } from '../../shim/src/hypervisor/native.js';
import { DEFAULT_CMDLINE, MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { builtGuestArtifacts, repoRoot } from '../../shim/src/util/paths.js';
import { ConsoleCapture, guestSpec, MEMORY_DIR, withTimeout } from '../lib/guest.js';

const RUNS = Math.max(5, Number(process.env.STENCIL_BENCH_RUNS ?? 5));
const MEMORY_MIB = 256;
const VCPUS = Number(process.env.STENCIL_BENCH_VCPUS ?? 1);
const TIMEOUT_MS = 180_000;
/** The goal this benchmark tracks: Stencil's whole-process cold boot at most half of QEMU's. */
const GOAL_RATIO_MAX = 0.5;

// The guest's first line of output: computed by the guest, so the text appears nowhere earlier
// (not in the command line, which carries the script base64-encoded anyway).
const GUEST_SCRIPT = 'echo "stencil-bench-ready $((6 * 7))"';
const READY = /^stencil-bench-ready 42\r?$/m;
const GUEST_APPEND = `stencil_run=${Buffer.from(GUEST_SCRIPT).toString('base64')} stencil_then=reboot`;
/** The kernel command line of every variant, before device declarations. */
const CMDLINE = `${DEFAULT_CMDLINE} ${GUEST_APPEND}`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const hex = (n: number) => `0x${n.toString(16)}`;

function guestImages(): { vmlinux: string; bzImage: string; initrd: string } {
  const { kernel, initrd } = builtGuestArtifacts();
  const { bzImage } = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'build', 'guest.json'), 'utf8')) as { bzImage?: string };
  if (!bzImage) throw new Error('build/guest.json has no bzImage (run make guest)');
  return { vmlinux: kernel, bzImage, initrd };
}

interface InProcessBoot {
  ms: number;
  stats: VmExitStats;
  cmdline: string;
}

/** MicroVm.create -> the guest's ready line, in this process; the VM's exit stats at that moment. */
async function stencilInProcess(kernel: string, cmdline: string): Promise<InProcessBoot> {
  const t0 = performance.now();
  const vm = MicroVm.create({ ...guestSpec(undefined, { vcpus: VCPUS, memoryBytes: MEMORY_MIB * 2 ** 20 }), kernel, cmdline });
  const console = new ConsoleCapture(vm);
  try {
    vm.start();
    // A guest that ends before its ready line (e.g. a triple fault) fails at once. Either failure
    // carries the exit stats: a hung nested boot with 0 KVM exits never entered the guest.
    const endedEarly = vm.waitExit().then((exit) => {
      throw new Error(`the VM ended (${exit.reason}: ${exit.detail}) before the ready line; console:\n${console.text.slice(-2000)}`);
    });
    endedEarly.catch(() => undefined);  // destroy() below ends the VM too: not an error then
    try {
      await Promise.race([console.waitFor(READY, TIMEOUT_MS), endedEarly]);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nexit stats: ${JSON.stringify(vm.exitStats(4))}`, { cause: err });
    }
    const ms = performance.now() - t0;
    return { ms, stats: vm.exitStats(8), cmdline: vm.cmdline };
  } finally {
    await vm.destroy();
  }
}

/** Spawns a VMM process and resolves with the time from spawn to the ready line on its stdout. */
async function wholeProcess(what: string, command: string, args: string[], stop: NodeJS.Signals): Promise<number> {
  const t0 = performance.now();
  const child: ChildProcessByStdio<null, Readable, Readable> = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    return await withTimeout(
      new Promise<number>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString('latin1');
          if (READY.test(out)) resolve(performance.now() - t0);
        });
        child.stderr.on('data', (d: Buffer) => (out += d.toString('latin1')));
        child.once('error', reject);
        child.once('exit', (code, signal) =>
          reject(new Error(`${what} exited (${code ?? signal}) before the guest's ready line:\n${out.slice(-2000)}`)));
      }),
      TIMEOUT_MS,
      `${what}: no ready line from the guest`,
    );
  } finally {
    // QEMU: SIGKILL (microvm has no reset device for reboot=k). stencil vm run: SIGTERM, on which it
    // destroys its VM and removes the RAM file; wait for that, so runs do not overlap.
    child.kill(stop);
    await exited;
  }
}

function qemuArgs(bzImage: string, initrd: string): string[] {
  return [
    '-M', 'microvm,acpi=off', '-enable-kvm', '-cpu', 'host', '-smp', String(VCPUS), '-m', `${MEMORY_MIB}M`,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio',
    '-kernel', bzImage, '-initrd', initrd, '-append', CMDLINE,
  ];
}

function stencilCliArgs(bzImage: string, initrd: string): string[] {
  // `vm run` puts DEFAULT_CMDLINE (and the configuration's kernelParams, empty by default) first.
  return [
    'vm', 'run', '--kernel', bzImage, '--initrd', initrd, '--vcpus', String(VCPUS), '--memory', `${MEMORY_MIB}M`,
    '--memory-dir', MEMORY_DIR, '--cmdline', GUEST_APPEND,
  ];
}

/** Medians of the in-process boots of one variant, and the exit counts of its median run. */
function summarize(boots: InProcessBoot[]) {
  const byTime = [...boots].sort((a, b) => a.ms - b.ms);
  const mid = byTime[Math.floor(byTime.length / 2)];
  const phases = Object.keys(mid.stats.setupPhasesMs);
  const kvm = Object.fromEntries(
    Object.entries(mid.stats.kvmVcpuStats).filter(([k]) => /exits$|^insn_emulation$|^hypercalls$|^irq_injections$|^halt_wait_ns$/.test(k)),
  );
  return {
    median_ms: Math.round(mid.ms),
    runs_ms: boots.map((b) => Math.round(b.ms)),
    first_console_byte_ms_median: Math.round(median(boots.map((b) => b.stats.firstConsoleMs))),
    setup_phases_ms_median: Object.fromEntries(
      phases.map((p) => [p, Number(median(boots.map((b) => b.stats.setupPhasesMs[p])).toFixed(1))]),
    ),
    median_run: {
      exits_by_reason: mid.stats.exitsByReason,
      top_io_ports: mid.stats.topIoPorts.map((p) => [hex(p.port), p.exits]),
      top_mmio: mid.stats.topMmio.map((m) => [hex(m.address), m.exits]),
      kvm_vcpu: kvm,
    },
  };
}

async function main() {
  const { vmlinux, bzImage, initrd } = guestImages();
  const stencilCli = path.join(repoRoot(), 'bin', 'stencil');
  const qemu = () => wholeProcess('qemu', 'qemu-system-x86_64', qemuArgs(bzImage, initrd), 'SIGKILL');
  const cli = () => wholeProcess('stencil vm run', stencilCli, stencilCliArgs(bzImage, initrd), 'SIGTERM');
  const inProcess = {
    bzimage: () => stencilInProcess(bzImage, CMDLINE),
    vmlinux: () => stencilInProcess(vmlinux, CMDLINE),
    // Without ACPI the kernel also probes the i8042 it would otherwise not look for (ACPI/PNP
    // lists none), and Stencil's status-only i8042 makes that 10,000 polls: leave that initcall out.
    acpi_off_mptable_only: () => stencilInProcess(bzImage, `${CMDLINE} acpi=off initcall_blacklist=i8042_init`),
    no_quiet: () => stencilInProcess(bzImage, CMDLINE.replace(/(^| )quiet( |$)/, ' ').trim()),
  };
  type Variant = keyof typeof inProcess;
  const variants = Object.keys(inProcess) as Variant[];

  const boots = Object.fromEntries(variants.map((v) => [v, [] as InProcessBoot[]])) as Record<Variant, InProcessBoot[]>;
  // A breakdown variant that fails is reported and left out of later rounds; the main figure's
  // variants (qemu, cli, bzimage) fail the benchmark.
  const failed: Partial<Record<Variant, string>> = {};
  const breakdown = async (v: Variant, round: number | 'warm-up') => {
    if (failed[v]) return;
    try {
      const boot = await inProcess[v]();
      if (round !== 'warm-up') boots[v].push(boot);
    } catch (err) {
      const m = (err as Error).message;  // its head says what failed, its tail has the exit stats
      failed[v] = `boot ${round}: ${m.length > 1500 ? `${m.slice(0, 300)} [...] ${m.slice(-1200)}` : m}`;
    }
  };
  const diagnostic = variants.filter((x) => x !== 'bzimage');

  // Warm-up: every variant once (page cache of the images, QEMU's and Node's binaries and modules).
  await qemu();
  await cli();
  await inProcess.bzimage();
  for (const v of diagnostic) await breakdown(v, 'warm-up');

  const qemuMs: number[] = [];
  const cliMs: number[] = [];
  for (let round = 0; round < RUNS; round++) {
    qemuMs.push(await qemu());
    boots.bzimage.push(await inProcess.bzimage());
    cliMs.push(await cli());
    for (const v of diagnostic) await breakdown(v, round);
  }

  const q = median(qemuMs);
  const s = median(boots.bzimage.map((b) => b.ms));
  const c = median(cliMs);
  const wholeProcessRatio = c / q;
  process.stdout.write(
    JSON.stringify({
      figure: 'cold_boot_to_guest_output',
      unit: 'ms',
      runs: RUNS,
      vcpus: VCPUS,
      memory_mib: MEMORY_MIB,
      kernel: bzImage,
      initrd,
      ready_line: READY.source,
      stencil_in_process_median: Math.round(s),
      stencil_vm_run_median: Math.round(c),
      qemu_microvm_median: Math.round(q),
      ratio_in_process: Number((s / q).toFixed(3)),
      ratio_vm_run: Number(wholeProcessRatio.toFixed(3)),
      ratio_meaning: 'stencil / qemu boot time (lower is better); in_process: from MicroVm.create, no process start',
      goal: `stencil vm run / qemu (both whole processes) <= ${GOAL_RATIO_MAX}`,
      goal_met: wholeProcessRatio <= GOAL_RATIO_MAX,
      stencil_cmdline: boots.bzimage[0].cmdline,
      stencil_vm_run_command: ['bin/stencil', ...stencilCliArgs(bzImage, initrd)].join(' '),
      qemu_cmdline: CMDLINE,
      qemu_command: ['qemu-system-x86_64', ...qemuArgs(bzImage, initrd)].join(' '),
      stencil_in_process_runs: boots.bzimage.map((b) => Math.round(b.ms)),
      stencil_vm_run_runs: cliMs.map(Math.round),
      qemu_runs: qemuMs.map(Math.round),
    }) + '\n',
  );
  process.stdout.write(
    JSON.stringify({
      figure: 'boot_breakdown',
      unit: 'ms',
      runs: RUNS,
      what: 'Stencil in-process boots to the ready line, per variant of the bzImage/quiet/ACPI baseline',
      ...Object.fromEntries(variants.map((v) => [v, failed[v] ? { failed: failed[v] } : summarize(boots[v])])),
    }) + '\n',
  );
}

main().catch((err) => {
  process.stderr.write(`boot bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
