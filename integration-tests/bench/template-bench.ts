// `make bench` (template figures): pods cloned from a template against an anchor measured side by
// side in the same run. Every variant runs once to warm up, then the variants run interleaved;
// figures are medians of RUNS (default 5). One JSON line per figure, with `goal` and `goal_met`:
//   template_restore_to_agent_ready  PodVm.boot cloned from a template (lib/template.ts, built
//                                    before timing) vs PodVm.boot cold, both until boot() resolves
//                                    (agent answered, guest set up); plus MicroVm.restore + start
//                                    to an agent ping alone. Goal: >= 10x faster.
//   stencil_clone_vs_qemu_clone      template-bench-clone.ts. Goal: >= 5x faster than QEMU's clone.
//   template_density                 template-bench-density.ts. Goal: clone private <= 20% of cold.
//   ctr_run_rm_true_templates        `ctr run --rm busybox true`, Stencil cloning vs runc
//                                    (lib/ctr-run-bench.ts). Goal: <= 1.5x runc.
//
//   node dist/integration-tests/bench/template-bench.js [--only restore,clone,density,ctr]
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_AGENT_PORT } from '../../shim/src/agent/vsock.js';
import type { TemplateRecord } from '../../shim/src/factory/template-store.js';
import { MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { AgentWaitError, waitForAgent } from '../../shim/src/pod/agent-wait.js';
import { MIN_GUEST_CID, type PodVm } from '../../shim/src/pod/pod-vm.js';
import { SHARE_TAG } from '../../shim/src/pod/vm-spec.js';
import { emit, median, MIB, note, round } from '../lib/bench-stats.js';
import { benchCtrVersion, RUNC, STENCIL } from '../lib/ctr-run-bench.js';
import { BOOT_TIMEOUT_MS, MEMORY_DIR } from '../lib/guest.js';
import { bootTestPod, CALL_TIMEOUT_MS, printConsole } from '../lib/pod.js';
import { cloningProvider, ensureTestTemplate, testPodShape } from '../lib/template.js';
import { cloneVsQemu } from './template-bench-clone.js';
import { density } from './template-bench-density.js';

const RUNS = Math.max(5, Number(process.env.STENCIL_BENCH_RUNS ?? 5));
const MEMORY_BYTES = 256 * MIB;
const DENSITY_VMS = Number(process.env.STENCIL_BENCH_DENSITY_VMS ?? 20);
const SETTLE_MS = 10_000;
const GOAL_RESTORE_SPEEDUP = 10;
const GOAL_CTR_RATIO = 1.5;
const FIGURES = ['restore', 'clone', 'density', 'ctr'] as const;

let seq = 0;

/** PodVm.boot (cold, or cloned through the test templates) until it resolves; the pod is shut down after. */
async function podBoot(kind: 'cold' | 'clone'): Promise<number> {
  const t0 = performance.now();
  let pod: PodVm | undefined;
  try {
    pod = await bootTestPod(`tb-${kind}${++seq}`, { memoryBytes: MEMORY_BYTES, ...(kind === 'clone' ? { vmProvider: cloningProvider() } : {}) });
    const ms = performance.now() - t0;
    if (kind === 'clone' && /Linux version|Run \/init/.test(pod.consoleTail())) throw new Error(`pod ${pod.id} booted a kernel instead of resuming a clone`);
    return ms;
  } catch (err) {
    printConsole(pod);
    throw err;
  } finally {
    await pod?.shutdown();
  }
}

/** MicroVm.restore from the template + start, until its agent answers a ping (no pod around it). */
async function restoreToPing(record: TemplateRecord): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-restore-bench-'));
  const vsockPath = path.join(dir, 'vsock.sock');
  const share = path.join(dir, 'share');
  fs.mkdirSync(share);
  let abandoned: Promise<void> = Promise.resolve();
  let vm: MicroVm | undefined;
  try {
    const t0 = performance.now();
    vm = MicroVm.restore(`tb-restore${++seq}-${process.pid}`, {
      restoreFrom: record.dir,
      vsock: { guestCid: crypto.randomInt(MIN_GUEST_CID, 2 ** 31), udsPath: vsockPath },
      shares: [{ tag: SHARE_TAG, hostPath: share }],
    });
    vm.start();
    const agent = await waitForAgent(vm, { vsockPath, agentPort: DEFAULT_AGENT_PORT, timeoutMs: BOOT_TIMEOUT_MS, callTimeoutMs: CALL_TIMEOUT_MS });
    abandoned = agent.abandoned;
    try {
      await agent.client.ping();
      return performance.now() - t0;
    } finally {
      agent.client.close('benchmark done');
    }
  } catch (err) {
    if (err instanceof AgentWaitError) abandoned = err.abandoned;
    throw err;
  } finally {
    await vm?.destroy();
    await abandoned;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function restoreFigure(): Promise<Record<string, unknown>> {
  const shape = testPodShape({ memoryBytes: MEMORY_BYTES });
  const made = await ensureTestTemplate(shape);
  note(`restore: template ${made.record.key} ${made.built ? 'built' : 'reused'} in ${made.ms} ms`);
  await podBoot('cold');  // warm-up of each variant
  await podBoot('clone');
  await restoreToPing(made.record);
  const runs = { cold: [] as number[], clone: [] as number[], restore: [] as number[] };
  for (let i = 0; i < RUNS; i++) {
    runs.cold.push(await podBoot('cold'));
    runs.clone.push(await podBoot('clone'));
    runs.restore.push(await restoreToPing(made.record));
    note(`restore round ${i + 1}: cold ${Math.round(runs.cold[i])} ms, clone ${Math.round(runs.clone[i])} ms, restore alone ${Math.round(runs.restore[i])} ms`);
  }
  const cold = median(runs.cold);
  const clone = median(runs.clone);
  return {
    figure: 'template_restore_to_agent_ready',
    unit: 'ms',
    runs: RUNS,
    memory_mib: MEMORY_BYTES / MIB,
    vcpus: shape.vcpus,
    what: 'PodVm.boot until it resolves (agent answered, guest set up: clock, hostname, entropy, 9p mount)',
    template_restore_median: round(clone, 1),
    cold_boot_median: Math.round(cold),
    speedup: round(cold / clone, 1),
    ratio: round(clone / cold, 4),
    ratio_meaning: 'template restore / cold boot (lower is better)',
    goal: `cold / restore >= ${GOAL_RESTORE_SPEEDUP}`,
    goal_met: cold / clone >= GOAL_RESTORE_SPEEDUP,
    restore_alone_median: round(median(runs.restore), 1),
    restore_alone: 'MicroVm.restore(template) + start until the agent answers a ping (no pod state dir, share view or guest setup)',
    template: { key: made.record.key, built_in_this_run: made.built, build_ms: made.ms, size_mib: round(made.record.sizeBytes / MIB, 1) },
    stencil_restore: 'PodVm.boot({ ...lib/pod.ts bootTestPod options, memoryBytes: 256 MiB, vmProvider: cloningProvider() })',
    stencil_cold: 'PodVm.boot({ ...lib/pod.ts bootTestPod options, memoryBytes: 256 MiB })',
    template_restore_runs: runs.clone.map((x) => round(x, 1)),
    cold_boot_runs: runs.cold.map(Math.round),
    restore_alone_runs: runs.restore.map((x) => round(x, 1)),
  };
}

async function ctrFigure(): Promise<Record<string, unknown>> {
  const line = await benchCtrVersion({ version: '1.6', runtimes: [RUNC, STENCIL], runs: RUNS, templates: true });
  const ratio = line.ratio_stencil_runc as number;
  delete line.warning;  // this benchmark's rounds are RUNS by design
  return { ...line, goal: `stencil (cloned) / runc <= ${GOAL_CTR_RATIO}`, goal_met: ratio <= GOAL_CTR_RATIO };
}

async function main() {
  const { values } = parseArgs({ options: { only: { type: 'string', default: FIGURES.join(',') } } });
  const only = values.only.split(',').filter(Boolean);
  for (const f of only) if (!(FIGURES as readonly string[]).includes(f)) throw new Error(`--only: unknown figure ${JSON.stringify(f)} (have ${FIGURES.join(', ')})`);
  fs.mkdirSync(MEMORY_DIR, { recursive: true, mode: 0o700 });
  const figures: Record<(typeof FIGURES)[number], () => Promise<Record<string, unknown>>> = {
    restore: restoreFigure,
    clone: async () => {
      const scratch = fs.mkdtempSync(path.join(MEMORY_DIR, 'clone-bench-'));
      try {
        return await cloneVsQemu(scratch, RUNS);
      } finally {
        fs.rmSync(scratch, { recursive: true, force: true });
      }
    },
    density: async () => ({ ...(await density(DENSITY_VMS, SETTLE_MS)), ksm_run: ksmRun() }),
    ctr: ctrFigure,
  };
  let failed = 0;
  for (const f of FIGURES) {
    if (!only.includes(f)) continue;
    const t0 = Date.now();
    try {
      emit(await figures[f]());
    } catch (err) {
      failed++;
      process.stderr.write(`template bench: figure ${f} failed: ${(err as Error).stack ?? err}\n`);
    }
    note(`figure ${f}: ${Math.round((Date.now() - t0) / 1000)} s`);
  }
  if (failed) process.exit(1);
}

/** KSM (the VMM marks guest RAM MADV_MERGEABLE) would merge cold pods' pages too: say whether it ran. */
function ksmRun(): string {
  try {
    return fs.readFileSync('/sys/kernel/mm/ksm/run', 'utf8').trim();
  } catch {
    return 'absent';
  }
}

main().catch((err) => {
  process.stderr.write(`template bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
