// load-soak (`make soak`; issue 13's load figures): CONCURRENCY workers each run containers one
// after another for SECONDS through a private real containerd (`ctr run --rm`; Stencil's pods are
// cloned from a template, on_miss "fail"), every container its own pod. Each container prints
// LINES numbered lines and exits 3: the output must be complete and in order and the exit code
// must arrive, or the run counts a failure (and prints why). Every SAMPLE seconds it records the
// shim processes (the VMM runs in Stencil's shim, so their PSS is the pods' host memory but the
// template's shared pages), per shim and in all, containerd's RSS, and the host's MemAvailable.
// One JSON line per runtime: containers run, failures, containers/s, the per-shim PSS at the
// start and the end of the run (flat means no growth), containerd's RSS at the start and end; with
// runc in --runtimes too (the anchor, run after Stencil in the same session), Stencil's
// throughput as a ratio of runc's. Ends with a leak check: nothing may be left behind.
//
//   node dist/integration-tests/bench/load-soak.js [--runtimes io.containerd.stencil.v2,io.containerd.runc.v2]
//        [--concurrency 100] [--seconds 600] [--lines 200] [--sample 10] [--version 2.1]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../../shim/src/util/paths.js';
import { emit, median, MIB, memAvailableBytes, note, round } from '../lib/bench-stats.js';
import { CONTAINERD_VERSIONS, ContainerdInstance, type ContainerdVersion } from '../lib/containerd.js';
import { SLOW_HOST_TIMEOUTS } from '../lib/containerd-config.js';
import { RUNC, STENCIL } from '../lib/ctr-run-bench.js';
import { ensureShimTemplate, SHIM_TEMPLATE_CONFIG } from '../lib/template.js';

interface Options {
  runtimes: string[];
  concurrency: number;
  seconds: number;
  lines: number;
  sampleSeconds: number;
  version: ContainerdVersion;
}

function positive(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      runtimes: { type: 'string', default: `${STENCIL},${RUNC}` },
      concurrency: { type: 'string', default: '100' },
      seconds: { type: 'string', default: '600' },
      lines: { type: 'string', default: '200' },
      sample: { type: 'string', default: '10' },
      version: { type: 'string', default: '2.1' },
    },
  });
  if (!(CONTAINERD_VERSIONS as readonly string[]).includes(values.version))
    throw new Error(`--version: unknown containerd version ${JSON.stringify(values.version)} (have ${CONTAINERD_VERSIONS.join(', ')})`);
  const runtimes = values.runtimes.split(',').filter(Boolean);
  for (const r of runtimes) if (r !== STENCIL && r !== RUNC) throw new Error(`--runtimes: ${JSON.stringify(r)} is neither ${STENCIL} nor ${RUNC}`);
  return {
    runtimes,
    concurrency: positive('concurrency', values.concurrency),
    seconds: positive('seconds', values.seconds),
    lines: positive('lines', values.lines),
    sampleSeconds: positive('sample', values.sample),
    version: values.version as ContainerdVersion,
  };
}

/** A process's proportional set size (shared pages split among their users), in bytes; 0 once it is gone. */
function pssBytes(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function rssBytes(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

interface Sample {
  atS: number;
  shims: number;
  shimPssMib: number;
  perShimPssMib: number;
  containerdRssMib: number;
  memAvailableMib: number;
}

function sample(c: ContainerdInstance, t0: number): Sample {
  const pss = c.shimPids().map(pssBytes).filter((b) => b > 0);
  const total = pss.reduce((a, b) => a + b, 0);
  return {
    atS: round((Date.now() - t0) / 1000),
    shims: pss.length,
    shimPssMib: round(total / MIB, 1),
    perShimPssMib: pss.length ? round(total / pss.length / MIB, 1) : 0,
    containerdRssMib: round(rssBytes(c.pid) / MIB, 1),
    memAvailableMib: round(memAvailableBytes() / MIB),
  };
}

/** "1 2 ... n" each on its line, then exit 3: what every container must deliver whole. */
function checkRun(r: { code: number; stdout: string; stderr: string }, lines: number): string | undefined {
  if (r.code !== 3) return `exit ${r.code} (want 3): ${r.stderr.trim().slice(-300)}`;
  const got = r.stdout.split('\n').filter(Boolean);
  if (got.length !== lines) return `${got.length} of ${lines} lines: ...${JSON.stringify(r.stdout.slice(-120))}`;
  const wrong = got.findIndex((l, i) => l !== `line ${i + 1}`);
  if (wrong >= 0) return `line ${wrong + 1} is ${JSON.stringify(got[wrong])}`;
  return undefined;
}

async function soak(o: Options, runtime: string): Promise<Record<string, unknown>> {
  const stencil = runtime === STENCIL;
  if (stencil) await ensureShimTemplate();
  const c = await ContainerdInstance.start({
    version: o.version,
    extraPath: [path.join(repoRoot(), 'bin')],
    configExtra: SLOW_HOST_TIMEOUTS,
    ...(stencil ? { env: { STENCIL_CONFIG: SHIM_TEMPLATE_CONFIG() } } : {}),
  });
  try {
    const image = await c.importBusybox();
    const t0 = Date.now();
    const end = t0 + o.seconds * 1000;
    const samples: Sample[] = [sample(c, t0)];
    const sampler = setInterval(() => {
      const s = sample(c, t0);
      samples.push(s);
      note(`${runtime} at ${s.atS} s: ${s.shims} shims, ${s.perShimPssMib} MiB PSS each (${s.shimPssMib} in all), containerd ${s.containerdRssMib} MiB, MemAvailable ${s.memAvailableMib} MiB`);
    }, o.sampleSeconds * 1000);
    let ran = 0;
    const failures: string[] = [];
    const ms: number[] = [];
    const script = `i=1; while [ $i -le ${o.lines} ]; do echo "line $i"; i=$((i+1)); done; exit 3`;
    const worker = async (w: number) => {
      for (let n = 0; Date.now() < end; n++) {
        const id = `load-${w}-${n}`;
        const started = performance.now();
        const r = await c.ctr(['run', '--rm', '--runtime', runtime, image, id, 'sh', '-c', script], { timeoutMs: 600_000 }).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
        ms.push(performance.now() - started);
        ran++;
        const wrong = checkRun(r, o.lines);
        if (wrong) {
          failures.push(`${id}: ${wrong}`);
          note(`FAILURE ${id}: ${wrong}`);
        }
      }
    };
    await Promise.all(Array.from({ length: o.concurrency }, (_, w) => worker(w)));
    clearInterval(sampler);
    const elapsedS = (Date.now() - t0) / 1000;
    const left = await c.waitNoLeaks(30_000);
    // Per-shim PSS over the run: the first and last thirds of the samples with shims running.
    const busy = samples.filter((s) => s.shims > 0);
    const third = Math.max(1, Math.floor(busy.length / 3));
    const perShim = (xs: Sample[]) => (xs.length ? median(xs.map((s) => s.perShimPssMib)) : 0);
    const ctrd = samples.map((s) => s.containerdRssMib);
    return {
      figure: 'load_soak',
      runtime,
      containerd: o.version,
      concurrency: o.concurrency,
      seconds: round(elapsedS),
      linesPerContainer: o.lines,
      containersRun: ran,
      failures: failures.length,
      failureSamples: failures.slice(0, 5),
      containersPerSecond: round(ran / elapsedS, 2),
      medianRunMs: ms.length ? round(median(ms)) : 0,
      perShimPssMibFirstThird: perShim(busy.slice(0, third)),
      perShimPssMibLastThird: perShim(busy.slice(-third)),
      maxShims: Math.max(...samples.map((s) => s.shims)),
      containerdRssMibStart: ctrd[0],
      containerdRssMibEnd: ctrd.at(-1),
      leftBehind: left,
      samples,
    };
  } finally {
    await c.stop();
  }
}

async function main() {
  const o = options();
  const results = new Map<string, Record<string, unknown>>();
  for (const runtime of o.runtimes) {
    note(`load soak: ${runtime}, ${o.concurrency} workers for ${o.seconds} s, ${o.lines} lines per container, containerd ${o.version}`);
    const r = await soak(o, runtime);
    results.set(runtime, r);
    emit(r);
  }
  const s = results.get(STENCIL);
  const anchor = results.get(RUNC);
  if (s && anchor) {
    emit({
      figure: 'load_soak_throughput_ratio',
      value: round((s.containersPerSecond as number) / (anchor.containersPerSecond as number), 3),
      unit: 'Stencil containers/s over runc containers/s, same load, same session',
      stencilFailures: s.failures,
      runcFailures: anchor.failures,
    });
  }
  const bad = [...results.values()].filter((r) => (r.failures as number) > 0 || (r.leftBehind as string[]).length > 0);
  if (bad.length) throw new Error(`failures or leftovers: ${bad.map((r) => `${r.runtime}: ${r.failures} failures, left ${JSON.stringify(r.leftBehind)}`).join('; ')}`);
}

main().catch((err) => {
  process.stderr.write(`load soak failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
