// `make bench` (live migration figures): a running guest moved live to another VMM process on the
// same host, by Stencil (`stencil vm run --qmp`, destination `vm run --incoming tcp:|unix:`) and by
// QEMU (`-incoming tcp:|unix:`), both as whole processes, driven over QMP with the same commands
// (`migrate {"uri"}`, `query-migrate` until completed), both with the same parameters set before
// every migration: downtime-limit 50 ms, max-bandwidth 10 GiB/s (QEMU's defaults are 300 ms and
// 128 MiB/s, Stencil's 50 ms and no cap), and auto-converge on for the dirtying guest (without it
// Stencil fails after x-max-rounds where QEMU iterates on).
// Both boot the same bzImage, initramfs, 256 MiB, 1 vCPU and kernel command line (Stencil adds its
// virtio_mmio declarations); the guest prints `t N` every ~5 ms (busybox ash, `read -t 0.005` on a
// FIFO: no fork per tick), and the dirtying guest also rewrites a 60 MiB tmpfs file in 5 MiB `dd`
// runs paced by /proc/uptime to 50 MiB/s, printing `d N` every 10 runs.
//
// The guest's view of the downtime: the host timestamps every console chunk as it arrives (the
// source's stdout until the switch, then the destination's), and the downtime is the largest gap
// between consecutive tick lines from `migrate` to 0.5 s after the destination's first tick. The
// VMM-reported downtime and total-time come from the source's query-migrate. Each guest boots once
// per VMM and then moves along a chain of destinations, unix and tcp alternating, RUNS of each; a
// chain that breaks (a VM that died or went silent) is reported in the JSON and started afresh, once.
// One JSON line per guest and transport (migration_{idle,dirty}_{unix,tcp}): medians of both VMMs,
// Stencil / QEMU ratios, every run; the idle ones with the goal guest-view downtime <= 50 ms.
//
//   node dist/integration-tests/bench/migration-bench.js [--only idle,dirty] [--runs N] [--vmms qemu,stencil]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_CMDLINE } from '../../shim/src/hypervisor/microvm.js';
import { builtGuestArtifacts, repoRoot } from '../../shim/src/util/paths.js';
import { emit, median, MIB, note, round } from '../lib/bench-stats.js';
import { freePort } from '../lib/cri-host.js';
import { guestParams, MEMORY_DIR } from '../lib/guest.js';
import { QmpClient } from '../lib/qmp-client.js';
import { guestBzImage, VmmProcess } from '../lib/vmm-process.js';

const MEMORY_MIB = 256;
const GOAL_IDLE_DOWNTIME_MS = 50;
const DIRTY_MIB_PER_S = 50;
/** How long after the destination's first tick the gap search goes on (a stutter right after counts). */
const AFTER_SWITCH_MS = 500;
const MIGRATION_TIMEOUT_MS = 60_000;
const POLL_MS = 50;
/** Set on both VMMs before every migration: the goal's downtime, no bandwidth cap to speak of. */
const MIGRATION_PARAMETERS = { 'downtime-limit': GOAL_IDLE_DOWNTIME_MS, 'max-bandwidth': 10 * 2 ** 30 };

const TICKER = 'mkfifo /tmp/tick; exec 3<>/tmp/tick; i=0; while true; do echo "t $i"; i=$((i+1)); read -t 0.005 -u 3 x; done';
// 5 MiB per run, 10 centiseconds of /proc/uptime per run at 50 MiB/s; over 12 slots (60 MiB) so a
// round of the migration sees distinct pages dirtied, not the same 5 MiB again. A guest more than
// 0.5 s behind (a pause) starts its schedule afresh instead of catching up in a burst.
const DIRTIER = [
  'dirty() {',
  '  cs() { read up x < /proc/uptime; now=$(( ${up%.*} * 100 + 1${up#*.} - 100 )); }',  // 1x: no octal 0x
  '  cs; t0=$now; n=0',
  '  while true; do',
  '    dd if=/dev/zero of=/dev/shm/dirty bs=1M count=5 seek=$(( n % 12 * 5 )) conv=notrunc 2>/dev/null',
  '    n=$((n+1)); [ $((n % 10)) = 0 ] && echo "d $n"',
  '    cs; ahead=$(( t0 + n * 10 - now ))',
  '    if [ $ahead -gt 0 ]; then usleep $((ahead * 10000)); elif [ $ahead -lt -50 ]; then t0=$((now - n * 10)); fi',
  '  done',
  '}',
  'dirty &',
].join('\n');

const GUESTS = {
  idle: TICKER,
  dirty: `${DIRTIER}\n${TICKER}`,
} as const;
type GuestKind = keyof typeof GUESTS;
type Transport = 'unix' | 'tcp';
type Vmm = 'qemu' | 'stencil';

const cmdlineAppend = (guest: GuestKind) => guestParams(GUESTS[guest]).join(' ');

/** One VMM process with its QMP session: a booted source, or a destination waiting for the stream. */
class Vm {
  qmp!: QmpClient;
  private constructor(
    readonly proc: VmmProcess,
    readonly qmpSocket: string,
  ) {}

  static async start(vmm: Vmm, guest: GuestKind, qmpSocket: string, incoming?: string): Promise<Vm> {
    const vm = new Vm(vmm === 'qemu' ? new VmmProcess('qemu-system-x86_64', qemuArgs(guest, qmpSocket, incoming), [qmpSocket])
      : new VmmProcess(path.join(repoRoot(), 'bin', 'stencil'), stencilArgs(guest, qmpSocket, incoming), [qmpSocket]), qmpSocket);
    try {
      vm.qmp = await QmpClient.connect(qmpSocket, 60_000);
    } catch (err) {
      await vm.proc.kill();
      throw new Error(`${vmm}: ${(err as Error).message}; output:\n${vm.proc.out.text.slice(-2000)}`, { cause: err });
    }
    return vm;
  }

  async stop(): Promise<void> {
    this.qmp?.execute('quit').catch(() => undefined);
    const quit = await Promise.race([this.proc.exited.then(() => true), sleep(10_000).then(() => false)]);
    this.qmp?.close();
    await this.proc.kill(quit ? 'SIGKILL' : 'SIGTERM');
  }
}

function qemuArgs(guest: GuestKind, qmpSocket: string, incoming?: string): string[] {
  return [
    '-M', 'microvm,acpi=off', '-enable-kvm', '-cpu', 'host', '-smp', '1', '-m', `${MEMORY_MIB}M`,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio',
    '-kernel', guestBzImage(), '-initrd', builtGuestArtifacts().initrd, '-append', `${DEFAULT_CMDLINE} ${cmdlineAppend(guest)}`,
    '-qmp', `unix:${qmpSocket},server=on,wait=off`,
    ...(incoming ? ['-incoming', incoming] : []),
  ];
}

function stencilArgs(guest: GuestKind, qmpSocket: string, incoming?: string): string[] {
  // `vm run` puts DEFAULT_CMDLINE (and the configuration's kernelParams, empty by default) first.
  // A destination takes vCPUs, memory and devices from the stream.
  const boot = ['--kernel', guestBzImage(), '--initrd', builtGuestArtifacts().initrd, '--vcpus', '1', '--memory', `${MEMORY_MIB}M`, '--cmdline', cmdlineAppend(guest)];
  return ['vm', 'run', ...(incoming ? ['--incoming', incoming] : boot), '--memory-dir', MEMORY_DIR, '--qmp', `unix:${qmpSocket},server,nowait`];
}

interface Tick {
  n: number;
  at: number;
  dest: boolean;
}

/** The tick lines of the source's console followed by the destination's, each stamped with the arrival of its newline. */
function ticks(source: VmmProcess, dest: VmmProcess): Tick[] {
  const out: Tick[] = [];
  let line = '';
  for (const [chunks, isDest] of [[source.out.stdout, false], [dest.out.stdout, true]] as const) {
    for (const { at, text } of chunks) {
      const parts = (line + text).split('\n');
      line = parts.pop()!;
      for (const l of parts) {
        const m = /^t (\d+)\r?$/.exec(l);
        if (m) out.push({ n: Number(m[1]), at, dest: isDest });
      }
    }
  }
  return out;
}

/** CPU time (user+system, ms) each thread of `pid` used over one second: whether a silent guest's vCPU runs, spins or halts. */
async function threadCpuMs(pid: number | undefined): Promise<Record<string, number>> {
  const read = () => {
    const out: Record<string, number> = {};
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out[`${tid} ${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))}`] = Number(fields[11]) + Number(fields[12]);
    }
    return out;
  };
  try {
    const before = read();
    await sleep(1000);
    const after = read();
    return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, (v - (before[k] ?? 0)) * 10]));
  } catch (err) {
    return { [(err as Error).message]: -1 };
  }
}

/** A silent Stencil VM's exit counts, then (paused) its vCPUs' registers. */
async function stencilExitStats(vm: Vm): Promise<string> {
  const query = async () => JSON.stringify(await vm.qmp.execute('x-query-exit-stats').catch((e: Error) => e.message));
  const running = await query();
  await vm.qmp.execute('stop').catch(() => undefined);
  return `${running} | ${await query()}`;
}

/**
 * A Stencil VM's KVM page faults so far (its vCPUs' `pf_taken`: with nested paging, the guest's
 * first touches of pages the VM's mappings lack), or undefined (QEMU, or no such counter).
 */
async function kvmFaults(vmm: Vmm, vm: Vm): Promise<number | undefined> {
  if (vmm !== 'stencil') return undefined;
  const stats = (await vm.qmp.execute('x-query-exit-stats').catch(() => ({}))) as { kvmVcpuStats?: Record<string, number> };
  return stats.kvmVcpuStats?.pf_taken;
}

/** Where the destination's guest paid for its new mappings after the switch, against the source's steady rate. */
function faultNote(sourceBefore: number | undefined, sourceAfter: number | undefined, destAtFirstTick: number | undefined, destAfter: number | undefined): string {
  if (destAtFirstTick === undefined || destAfter === undefined) return '';
  const steady = sourceBefore !== undefined && sourceAfter !== undefined ? `; the source took ${sourceAfter - sourceBefore} in the second before migrate` : '';
  return ` (destination KVM page faults: ${destAtFirstTick} by its first tick, ${destAfter - destAtFirstTick} in the ${AFTER_SWITCH_MS + 100} ms after${steady})`;
}

/** MiB/s the guest's dirtier wrote, from its `d N` lines (10 runs of 5 MiB each) in [from, to]. */
function guestWriteRate(proc: VmmProcess, from: number, to: number): number | undefined {
  const marks: Array<{ n: number; at: number }> = [];
  let line = '';
  for (const { at, text } of proc.out.stdout) {
    const parts = (line + text).split('\n');
    line = parts.pop()!;
    for (const l of parts) {
      const m = /^d (\d+)\r?$/.exec(l);
      if (m && at >= from && at <= to) marks.push({ n: Number(m[1]), at });
    }
  }
  if (marks.length < 2) return undefined;
  const first = marks[0];
  const last = marks[marks.length - 1];
  return ((last.n - first.n) * 5) / ((last.at - first.at) / 1000);
}

interface QueryMigrate {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'error-desc'?: string;
  'cpu-throttle-percentage'?: number;
  /** Stencil's: where the downtime went (ms). */
  'x-downtime-phases'?: Record<string, number>;
  ram?: { transferred?: number; total?: number; 'dirty-pages-rate'?: number; 'dirty-sync-count'?: number; mbps?: number };
}

interface MigrationRun {
  vmm: Vmm;
  transport: Transport;
  guestViewDowntimeMs: number;
  /** Last source tick to the destination's first. */
  switchGapMs: number;
  reportedDowntimeMs?: number;
  /** Stencil's split of it (query-migrate's x-downtime-phases: pause, final-ram, save-state, destination). */
  downtimePhasesMs?: Record<string, number>;
  totalTimeMs?: number;
  /** Ticks missing or repeated across the switch (both should be 0). */
  ticksLost: number;
  ticksRepeated: number;
  gapBeforeMs: { median: number; max: number };
  transferredMib?: number;
  rounds?: number;
  /** The largest dirty-pages-rate query-migrate showed during the run, in MiB/s. */
  vmmDirtyRateMibS: number;
  /** The largest auto-converge throttle query-migrate showed (percent). */
  maxThrottlePercent: number;
  guestWriteRateMibS?: number;
  error?: string;
}

/** Moves `source` to a new destination over `transport`; returns the destination (the next source) and the figures. */
async function migrateOnce(vmm: Vmm, guest: GuestKind, source: Vm, transport: Transport, dir: string, seq: number): Promise<{ dest: Vm | undefined; run: MigrationRun }> {
  const uri = transport === 'unix' ? `unix:${path.join(dir, `migrate-${seq}.sock`)}` : `tcp:127.0.0.1:${await freePort()}`;
  const dest = await Vm.start(vmm, guest, path.join(dir, `qmp-${seq}.sock`), uri);
  try {
    return await migrateTo(vmm, guest, source, dest, transport, uri);
  } catch (err) {
    await dest.stop();
    const tail = (vm: Vm) => vm.proc.out.text.slice(-1500);
    throw new Error(`${vmm} ${transport} migration: ${(err as Error).message}\n--- source output:\n${tail(source)}\n--- destination output:\n${tail(dest)}`, { cause: err });
  }
}

async function migrateTo(vmm: Vmm, guest: GuestKind, source: Vm, dest: Vm, transport: Transport, uri: string): Promise<{ dest: Vm | undefined; run: MigrationRun }> {
  const state = ((await dest.qmp.execute('query-status')) as { status?: string }).status;
  if (state !== 'inmigrate') throw new Error(`${vmm} destination: query-status says ${state}, not inmigrate`);
  const sourceFaultsBefore = await kvmFaults(vmm, source);
  await sleep(1000);  // the destination's start (Node under TCG for Stencil) settles before timing
  const sourceFaults = await kvmFaults(vmm, source);
  // The same parameters for both VMMs (QEMU's defaults are 300 ms and 128 MiB/s; Stencil's 50 ms, no cap).
  await source.qmp.execute('migrate-set-parameters', MIGRATION_PARAMETERS);  // a destination starts with the defaults
  if (guest === 'dirty') await source.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'auto-converge', state: true }] });
  const migrateAt = performance.now();
  await source.qmp.execute('migrate', { uri });
  let info: QueryMigrate;
  let dirtyPagesRate = 0;
  let throttle = 0;
  const deadline = Date.now() + MIGRATION_TIMEOUT_MS;
  for (;;) {
    info = (await source.qmp.execute('query-migrate')) as QueryMigrate;
    dirtyPagesRate = Math.max(dirtyPagesRate, info.ram?.['dirty-pages-rate'] ?? 0);
    throttle = Math.max(throttle, info['cpu-throttle-percentage'] ?? 0);
    // A QEMU destination turned source answers with its incoming migration's `completed` (no
    // total-time) until the outgoing one has set itself up.
    const stale = info.status === 'completed' && !info['total-time'];
    if (!stale && (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled')) break;
    if (Date.now() > deadline) {
      await source.qmp.execute('migrate_cancel');
      info = { ...info, status: 'timeout', 'error-desc': `not completed within ${MIGRATION_TIMEOUT_MS} ms` };
      break;
    }
    await sleep(POLL_MS);
  }
  const endedAt = performance.now();
  const base = {
    vmm,
    transport,
    reportedDowntimeMs: info.downtime,
    downtimePhasesMs: info['x-downtime-phases'],
    totalTimeMs: info['total-time'],
    transferredMib: info.ram?.transferred !== undefined ? round(info.ram.transferred / MIB, 1) : undefined,
    rounds: info.ram?.['dirty-sync-count'],
    vmmDirtyRateMibS: round((dirtyPagesRate * 4096) / MIB, 1),
    maxThrottlePercent: throttle,
    guestWriteRateMibS: guest === 'dirty' ? round(guestWriteRate(source.proc, migrateAt - 3000, migrateAt) ?? NaN, 1) : undefined,
  };
  if (info.status !== 'completed') {
    await dest.stop();
    const error = `${vmm} ${transport}: migration ${info.status}: ${info['error-desc'] ?? ''}`;
    note(error);
    return { dest: undefined, run: { ...base, guestViewDowntimeMs: NaN, switchGapMs: NaN, ticksLost: 0, ticksRepeated: 0, gapBeforeMs: { median: NaN, max: NaN }, error } };
  }
  const lastAtCompletion = ticks(source.proc, dest.proc).at(-1)?.n;
  const firstDest = await dest.proc.waitFor(/(?:^|\n)t (\d+)\r?\n/, `${vmm} destination's first tick`, 20_000).catch(async (err: Error) => {
    const status = async (vm: Vm) => JSON.stringify(await vm.qmp.execute('query-status').catch((e: Error) => e.message));
    throw new Error(`${err.message}\nthe last tick when the source said completed: ${lastAtCompletion}; the source's last tick now: ${ticks(source.proc, dest.proc).at(-1)?.n}; ` +
      `query-status: source ${await status(source)}, destination ${await status(dest)}; query-migrate on the destination: ${JSON.stringify(await dest.qmp.execute('query-migrate').catch((e: Error) => e.message))}; ` +
      `the destination's threads' CPU ms over 1 s: ${JSON.stringify(await threadCpuMs(dest.proc.child.pid))}` +
      (vmm === 'stencil' ? `; its exit stats, then paused: ${await stencilExitStats(dest)}` : ''), { cause: err });
  });
  const destFaultsAtFirstTick = await kvmFaults(vmm, dest);
  await sleep(AFTER_SWITCH_MS + 100);
  const destFaultsAfter = await kvmFaults(vmm, dest);
  const all = ticks(source.proc, dest.proc);
  const firstDestTick = all.find((t) => t.dest);
  if (!firstDestTick) throw new Error(`${vmm}: the destination printed ${firstDest[0]} but no tick line was parsed`);
  // From the last tick before `migrate` to 0.5 s after the destination's first.
  const startIndex = Math.max(0, all.findIndex((t) => t.at >= migrateAt) - 1);
  const window = all.slice(startIndex).filter((t) => t.at <= firstDestTick.at + AFTER_SWITCH_MS);
  let gap = 0;
  let lost = 0;
  let repeated = 0;
  for (let i = 1; i < window.length; i++) {
    gap = Math.max(gap, window[i].at - window[i - 1].at);
    const step = window[i].n - window[i - 1].n;
    if (step > 1) lost += step - 1;
    if (step < 1) repeated += 1 - step;
  }
  const lastSource = [...all].reverse().find((t) => !t.dest)!;
  const before = all.filter((t) => t.at >= migrateAt - 1000 && t.at < migrateAt);
  const beforeGaps = before.slice(1).map((t, i) => t.at - before[i].at);
  // A Stencil destination's own setup of the arriving VM (devices, KVM state), part of its phase of the downtime.
  const destSetup = vmm === 'stencil' ? ((await dest.qmp.execute('x-query-exit-stats').catch(() => ({}))) as { setupPhasesMs?: Record<string, number> }).setupPhasesMs : undefined;
  note(`${vmm} ${guest} ${transport}: guest view ${round(gap, 1)} ms, reported downtime ${info.downtime} ms${info['x-downtime-phases'] ? ` ${JSON.stringify(info['x-downtime-phases'])}` : ''}${destSetup ? ` (destination setup ${JSON.stringify(destSetup)})` : ''}${faultNote(sourceFaultsBefore, sourceFaults, destFaultsAtFirstTick, destFaultsAfter)}, total ${info['total-time']} ms (${round(endedAt - migrateAt)} ms to completed here), ticks ${lastSource.n} -> ${firstDestTick.n}`);
  return {
    dest,
    run: {
      ...base,
      guestViewDowntimeMs: round(gap, 1),
      switchGapMs: round(firstDestTick.at - lastSource.at, 1),
      ticksLost: lost,
      ticksRepeated: repeated,
      gapBeforeMs: { median: beforeGaps.length ? round(median(beforeGaps), 1) : NaN, max: beforeGaps.length ? round(Math.max(...beforeGaps), 1) : NaN },
    },
  };
}

/** Boots `guest` on `vmm` and moves it along a chain of destinations, unix and tcp alternating, until `results` holds `count`. */
async function chain(vmm: Vmm, guest: GuestKind, count: number, dir: string, results: MigrationRun[]): Promise<unknown> {
  let seq = fs.readdirSync(dir).length;
  let vm: Vm | undefined = await Vm.start(vmm, guest, path.join(dir, `qmp-${seq}.sock`));
  try {
    await vm.proc.waitFor(/(?:^|\n)t 1\r?\n/, `${vmm} ${guest} boot`);
    if (guest === 'dirty') await vm.proc.waitFor(/(?:^|\n)d 30\r?\n/, `${vmm} dirtier`, 60_000);
    else await sleep(2000);
    await vm.qmp.execute('migrate-set-parameters', MIGRATION_PARAMETERS);
    const all = (await vm.qmp.execute('query-migrate-parameters')) as Record<string, unknown>;
    const parameters = { 'downtime-limit': all['downtime-limit'], 'max-bandwidth': all['max-bandwidth'] };
    while (results.length < count) {
      const transport: Transport = results.length % 2 ? 'tcp' : 'unix';
      const { dest, run } = await migrateOnce(vmm, guest, vm, transport, dir, ++seq);
      results.push(run);
      if (dest) {
        await vm.stop();
        vm = dest;
        await sleep(1000);  // the guest runs on the destination a while before it moves again
      }
    }
    return parameters;
  } catch (err) {
    if (!(err instanceof Error) || err.message.includes('--- source output')) throw err;
    const exit = vm.proc.running ? 'running' : `exited (${await vm.proc.exited})`;
    throw new Error(`${err.message}\n--- ${vmm} (${exit}) output:\n${vm.proc.out.text.slice(-1500)}`, { cause: err });
  } finally {
    await vm?.stop();
  }
}

const med = (xs: Array<number | undefined>) => {
  const ok = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
  return ok.length ? round(median(ok), 1) : null;
};
/** Medians of each phase of the reported downtime, for a VMM that splits it (Stencil). */
function downtimePhases(rs: MigrationRun[]): { downtime_phases_ms?: Record<string, number | null> } {
  const names = [...new Set(rs.flatMap((r) => Object.keys(r.downtimePhasesMs ?? {})))];
  if (!names.length) return {};
  return { downtime_phases_ms: Object.fromEntries(names.map((n) => [n, med(rs.map((r) => r.downtimePhasesMs?.[n]))])) };
}
const ratio = (s: number | null, q: number | null) => (s !== null && q !== null && q > 0 ? round(s / q, 3) : null);

function figure(guest: GuestKind, transport: Transport, stencil: MigrationRun[], qemu: MigrationRun[], parameters: Record<Vmm, unknown>, incidents: Record<Vmm, string[]>): Record<string, unknown> {
  const pick = (rs: MigrationRun[]) => rs.filter((r) => r.transport === transport);
  const s = pick(stencil);
  const q = pick(qemu);
  const summary = (rs: MigrationRun[]) => ({
    guest_view_downtime_ms: med(rs.map((r) => r.guestViewDowntimeMs)),
    reported_downtime_ms: med(rs.map((r) => r.reportedDowntimeMs)),
    ...downtimePhases(rs),
    total_time_ms: med(rs.map((r) => r.totalTimeMs)),
    switch_gap_ms: med(rs.map((r) => r.switchGapMs)),
    transferred_mib: med(rs.map((r) => r.transferredMib)),
    vmm_dirty_rate_mib_s: med(rs.map((r) => r.vmmDirtyRateMibS)),
    max_throttle_percent: Math.max(0, ...rs.map((r) => r.maxThrottlePercent)),
    ...(guest === 'dirty' ? { guest_write_rate_mib_s: med(rs.map((r) => r.guestWriteRateMibS)) } : {}),
    completed: rs.filter((r) => !r.error).length,
    failed: rs.filter((r) => r.error).length,
  });
  const ss = summary(s);
  const qs = summary(q);
  const goal = guest === 'idle' ? {
    goal: `stencil guest-view downtime <= ${GOAL_IDLE_DOWNTIME_MS} ms (idle guest)`,
    goal_met: ss.guest_view_downtime_ms !== null && ss.guest_view_downtime_ms <= GOAL_IDLE_DOWNTIME_MS,
  } : {};
  return {
    figure: `migration_${guest}_${transport}`,
    unit: 'ms',
    runs: { stencil: s.length, qemu: q.length },
    memory_mib: MEMORY_MIB,
    vcpus: 1,
    guest: guest === 'idle' ? 'ticks every ~5 ms' : `ticks every ~5 ms, rewrites a 60 MiB tmpfs file at ${DIRTY_MIB_PER_S} MiB/s`,
    what: "guest view: the largest gap between the console's consecutive tick lines as they reach the host, from migrate to 0.5 s after the destination's first tick; reported: query-migrate's downtime and total-time",
    stencil: ss,
    qemu: qs,
    ratio_guest_view_downtime: ratio(ss.guest_view_downtime_ms, qs.guest_view_downtime_ms),
    ratio_reported_downtime: ratio(ss.reported_downtime_ms, qs.reported_downtime_ms),
    ratio_total_time: ratio(ss.total_time_ms, qs.total_time_ms),
    ratio_meaning: 'stencil / qemu (lower is better)',
    ...goal,
    migration_parameters: parameters,
    auto_converge: guest === 'dirty',
    broken_chains: incidents,
    stencil_runs: s,
    qemu_runs: q,
  };
}

async function main() {
  const { values } = parseArgs({ options: { only: { type: 'string' }, runs: { type: 'string' }, vmms: { type: 'string' } } });
  const vmms = (values.vmms?.split(',') ?? ['qemu', 'stencil']) as Vmm[];
  const runs = Math.max(1, Number(values.runs ?? process.env.STENCIL_BENCH_MIGRATION_RUNS ?? 3));
  const only = (values.only?.split(',') ?? Object.keys(GUESTS)) as GuestKind[];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-migration-bench-'));
  fs.mkdirSync(MEMORY_DIR, { recursive: true, mode: 0o700 });
  let failed = false;
  try {
    for (const guest of only) {
      if (!(guest in GUESTS)) throw new Error(`--only ${guest}: expected idle or dirty`);
      const results: Record<Vmm, MigrationRun[]> = { qemu: [], stencil: [] };
      const parameters = {} as Record<Vmm, unknown>;
      const incidents: Record<Vmm, string[]> = { qemu: [], stencil: [] };
      for (const vmm of vmms) {
        note(`migration bench: ${guest} guest on ${vmm}, ${runs} x unix and tcp`);
        // A chain that breaks (a VM that died or went silent) is reported and started afresh, once.
        for (let attempt = 0; attempt < 2 && results[vmm].length < 2 * runs; attempt++) {
          try {
            parameters[vmm] = await chain(vmm, guest, 2 * runs, dir, results[vmm]);
          } catch (err) {
            failed = true;
            incidents[vmm].push(`after ${results[vmm].length} migrations: ${(err as Error).message.split('\n').filter((l) => !/^t \d+\r?$/.test(l)).slice(0, 8).join(' | ')}`);
            note(`migration bench: ${vmm} ${guest}: ${(err as Error).stack}`);
          }
        }
      }
      for (const transport of ['unix', 'tcp'] as const) emit(figure(guest, transport, results.stencil, results.qemu, parameters, incidents));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (failed) process.exitCode = 1;
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
