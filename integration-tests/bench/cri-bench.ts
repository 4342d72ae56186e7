// CRI benchmark (issue 11), side by side in one containerd with the CRI plugin: Stencil (pods
// cloned from the shim's template) against runc, the reference, through the same CRI calls.
//   1. RunPodSandbox + CreateContainer + StartContainer until the container's first log line,
//      alternating runtimes after a warm-up of each, median of --runs (default 10); and the median
//      of each of those calls per runtime (cri_pod_start_phase_ms).
//   2. --parallel pods (default 50) started at once per runtime: total time to all running,
//      failures, and host memory per pod (MemAvailable drop while they run; the Stencil figure
//      includes each pod's shim daemon and VM, runc's each pod's shim and containers); for Stencil
//      also where a pod's memory goes (cri_pod_memory_breakdown, from each daemon's smaps).
// One JSON line per figure on stdout; progress on stderr. STENCIL_CRI_BENCH_LOG=N prints the last N
// lines of containerd's log (with the shims') at the end, to see where a pod's start goes (with
// STENCIL_TEST_SHIM_LOG_LEVEL=debug: each agent call and the guest's console); a failure prints 80.
// Usage: node dist/integration-tests/bench/cri-bench.js [--version 1.6|2.1] [--runs N] [--parallel N]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ContainerdInstance, type ContainerdVersion } from '../lib/containerd.js';
import type { CriClient } from '../lib/cri.js';
import { containerConfig, criStartOptions, podConfig, removePod, waitFor } from '../lib/cri-pods.js';
import { emit, MIB, median, memAvailableBytes, note, round } from '../lib/bench-stats.js';
import { ensureShimTemplate, SHIM_TEMPLATE_CONFIG, SHIM_TEMPLATE_DIR, templateFile } from '../lib/template.js';
import { TemplateStore } from '../../shim/src/factory/template-store.js';
import { processesMapping, processMaps } from '../../shim/src/factory/clone-usage.js';

const { values } = parseArgs({ options: { version: { type: 'string', default: '2.1' }, runs: { type: 'string', default: '10' }, parallel: { type: 'string', default: '50' } } });
const version = values.version as ContainerdVersion;
const runs = Number(values.runs);
const parallel = Number(values.parallel);
const LOG_LINES = Number(process.env.STENCIL_CRI_BENCH_LOG ?? 0);
const HANDLERS = ['runc', 'stencil'] as const;
const COMMAND = ['sh', '-c', 'echo started; exec sleep 100000'];

/** The CRI calls of a pod start, each timed: where a runtime's start time goes. */
const PHASES = ['run_pod_sandbox', 'create_container', 'start_container', 'first_log_line'] as const;
type Phases = Record<(typeof PHASES)[number], number>;

/** A pod with one container, until the container has written its first line: ms (in all, and per phase), and the pod id. */
async function startPod(cri: CriClient, handler: string, image: string, logRoot: string, name: string): Promise<{ ms: number; phases: Phases; id: string }> {
  const t0 = performance.now();
  let last = t0;
  const lap = () => {
    const now = performance.now();
    const ms = now - last;
    last = now;
    return ms;
  };
  const config = podConfig(name, { logRoot });
  const { podSandboxId } = await cri.runPodSandbox(config, handler);
  const runPodSandbox = lap();
  const id = await cri.createContainer(podSandboxId, containerConfig('c', image, COMMAND), config);
  const createContainer = lap();
  await cri.startContainer(id);
  const startContainer = lap();
  const log = path.join(config.logDirectory!, 'c', '0.log');
  await waitFor(`the first log line of pod ${name}`, async () => (fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('started') ? true : undefined), 300_000, 20);
  const phases = { run_pod_sandbox: runPodSandbox, create_container: createContainer, start_container: startContainer, first_log_line: lap() };
  return { ms: performance.now() - t0, phases, id: podSandboxId };
}

/**
 * Where a running Stencil pod's host memory goes, median over the daemons that run a clone of one
 * of the shim's templates (spare daemons, with no VM yet, are not among them): the guest RAM the clone wrote (its
 * copy-on-write copies), its share of the template's pages, the rest of the daemon's anonymous
 * memory (Node and the VMM) and the daemon's PSS. The MemAvailable drop per pod minus that PSS is
 * what no process maps: the kernel's side (KVM's page tables, the tap, sockets) and page cache.
 */
function podMemoryBreakdown(templateMemories: string[]): Record<string, number> {
  const rows = templateMemories.flatMap((file) => processesMapping(file)).flatMap((u) => {
    let rollup: string;
    try {
      rollup = fs.readFileSync(`/proc/${u.pid}/smaps_rollup`, 'utf8');
    } catch {
      return []; // the daemon went away meanwhile
    }
    const bytes = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(rollup)?.[1] ?? NaN) * 1024;
    return [{ written: u.privateBytes, templateShare: u.pssBytes - u.privateBytes, otherAnon: bytes('Anonymous') - u.privateBytes, pss: bytes('Pss') }];
  });
  if (!rows.length) {
    // Say what the processes do map, so a breakdown that found nothing can be looked into.
    const seen = new Set<string>();
    for (const [pid, maps] of processMaps()) for (const l of maps.split('\n')) if (/stencil|memory|ram/i.test(l)) seen.add(`${pid}: ${l.replace(/^\S+ \S+ \S+ \S+ /, '')}`);
    note(`memory breakdown: no process maps ${templateMemories.join(', ')}; mappings that look related:\n${[...seen].slice(0, 30).join('\n')}`);
  }
  const mib = (pick: (r: (typeof rows)[number]) => number) => (rows.length ? round(median(rows.map(pick)) / MIB, 1) : 0);
  return {
    templates: templateMemories.length,
    daemons: rows.length,
    guest_ram_written_mib: mib((r) => r.written),
    template_share_mib: mib((r) => r.templateShare),
    daemon_other_anon_mib: mib((r) => r.otherAnon),
    daemon_pss_mib: mib((r) => r.pss),
  };
}

async function main(): Promise<void> {
  await ensureShimTemplate();
  const c = await ContainerdInstance.start({ version, ...criStartOptions([...HANDLERS], { stencil: SHIM_TEMPLATE_CONFIG() }) });
  const logRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-cri-bench-'));
  try {
    const image = await c.importCriImages();
    const cri = c.cri();
    // 1. one pod at a time
    const samples: Record<string, number[]> = { runc: [], stencil: [] };
    const phaseSamples: Record<string, Phases[]> = { runc: [], stencil: [] };
    for (const h of HANDLERS) await removePod(cri, (await startPod(cri, h, image, logRoot, `warm-${h}`)).id);
    for (let i = 0; i < runs; i++) {
      for (const h of i % 2 ? [...HANDLERS].reverse() : HANDLERS) {
        const { ms, phases, id } = await startPod(cri, h, image, logRoot, `one-${h}-${i}`);
        samples[h].push(ms);
        phaseSamples[h].push(phases);
        await removePod(cri, id);
      }
      note(`run ${i + 1}/${runs}: runc ${round(samples.runc.at(-1)!)} ms, stencil ${round(samples.stencil.at(-1)!)} ms`);
    }
    const runc = median(samples.runc);
    const stencil = median(samples.stencil);
    emit({
      figure: 'cri_pod_start_ms',
      containerd: c.packageVersion,
      what: 'RunPodSandbox + CreateContainer + StartContainer to the first log line, median',
      runs,
      runc_ms: round(runc),
      stencil_template_ms: round(stencil),
      ratio: round(stencil / runc, 2),
      goal: '<= 1.5',
      goal_met: stencil / runc <= 1.5,
    });
    // Where the time goes: each CRI call's median per runtime (the medians need not add up to the total's).
    for (const phase of PHASES) {
      const of = (h: string) => median(phaseSamples[h].map((p) => p[phase]));
      emit({ figure: 'cri_pod_start_phase_ms', containerd: c.packageVersion, phase, runs, runc_ms: round(of('runc')), stencil_template_ms: round(of('stencil')), ratio: round(of('stencil') / of('runc'), 2) });
    }

    // 2. many pods at once, per runtime
    for (const h of HANDLERS) {
      const before = memAvailableBytes();
      const t0 = performance.now();
      const results = await Promise.allSettled(Array.from({ length: parallel }, (_, i) => startPod(cri, h, image, logRoot, `many-${h}-${i}`)));
      const totalMs = performance.now() - t0;
      await new Promise((r) => setTimeout(r, 2000)); // let page cache and lazy allocations settle
      const perPod = (before - memAvailableBytes()) / parallel;
      const breakdown = h === 'stencil' ? podMemoryBreakdown(new TemplateStore(SHIM_TEMPLATE_DIR).list().map((r) => templateFile(r, 'memory'))) : undefined;
      const failures = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
      for (const f of failures.slice(0, 3)) note(`${h}: a pod failed: ${String(f.reason)}`);
      if (failures.length > 0) note(`containerd's log (and the shims'), last lines:\n${c.logTail(60)}`);
      emit({
        figure: 'cri_parallel_pods',
        containerd: c.packageVersion,
        runtime: h,
        pods: parallel,
        total_ms: round(totalMs),
        failures: failures.length,
        host_memory_per_pod_mib: round(perPod / MIB, 1),
      });
      if (breakdown) emit({ figure: 'cri_pod_memory_breakdown', containerd: c.packageVersion, pods: parallel, host_memory_per_pod_mib: round(perPod / MIB, 1), ...breakdown });
      const pods = await cri.listPodSandbox();
      await Promise.all(pods.map((p) => removePod(cri, p.id).catch((err: Error) => note(`removing ${p.id}: ${err.message}`))));
    }
    const left = await c.waitNoLeaks(60_000);
    if (left.length) throw new Error(`left behind:\n${left.join('\n')}`);
    if (LOG_LINES) note(`containerd's log (and the shims'), last lines:\n${c.logTail(LOG_LINES)}`);
  } catch (err) {
    note(`containerd's log (and the shims'), last lines:\n${c.logTail(LOG_LINES || 80)}`);
    throw err;
  } finally {
    await c.stop();
    fs.rmSync(logRoot, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`cri-bench: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
