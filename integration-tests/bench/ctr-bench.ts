// Benchmark anchor: wall time of `ctr run --rm <busybox> true` (ctr's own start included) on a
// private real containerd, per runtime, runs interleaved, median of --runs (default 10, at least 10
// for a reported figure). One JSON line per containerd version on stdout; with both runc and
// Stencil in --runtimes it carries the Stencil/runc ratio.
//
//   node dist/integration-tests/bench/ctr-bench.js [--runtimes io.containerd.runc.v2,io.containerd.stencil.v2]
//        [--versions 1.6,2.1] [--runs 10]
import path from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../../shim/src/util/paths.js';
import { CONTAINERD_VERSIONS, type ContainerdVersion, ContainerdInstance } from '../lib/containerd.js';

const RUNC = 'io.containerd.runc.v2';
const STENCIL = 'io.containerd.stencil.v2';

function options() {
  const { values } = parseArgs({
    options: {
      runtimes: { type: 'string', default: RUNC },
      versions: { type: 'string', default: CONTAINERD_VERSIONS.join(',') },
      runs: { type: 'string', default: process.env.STENCIL_BENCH_RUNS ?? '10' },
    },
  });
  const runtimes = values.runtimes.split(',').filter(Boolean);
  const versions = values.versions.split(',').filter(Boolean);
  for (const v of versions)
    if (!(CONTAINERD_VERSIONS as readonly string[]).includes(v))
      throw new Error(`--versions: unknown containerd version ${JSON.stringify(v)} (have ${CONTAINERD_VERSIONS.join(', ')})`);
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got ${JSON.stringify(values.runs)}`);
  if (runtimes.length === 0) throw new Error('--runtimes is empty');
  return { runtimes, versions: versions as ContainerdVersion[], runs };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function timedRun(c: ContainerdInstance, runtime: string, id: string): Promise<number> {
  const t0 = performance.now();
  const r = await c.ctr(['run', '--rm', '--runtime', runtime, c.image, id, 'true']);
  const ms = performance.now() - t0;
  if (r.code !== 0 || r.stdout !== '')
    throw new Error(`ctr run --rm --runtime ${runtime} ${c.image} ${id} true on containerd ${c.version}: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr}\ncontainerd log:\n${c.logTail()}`);
  return ms;
}

async function benchVersion(version: ContainerdVersion, runtimes: string[], runs: number): Promise<Record<string, unknown>> {
  const c = await ContainerdInstance.start({ version, extraPath: [path.join(repoRoot(), 'bin')] });
  try {
    await c.importBusybox();
    const samples: Record<string, number[]> = Object.fromEntries(runtimes.map((r) => [r, []]));
    for (const runtime of runtimes) await timedRun(c, runtime, 'warmup'); // page cache, first shim start
    for (let i = 0; i < runs; i++) for (const runtime of runtimes) samples[runtime].push(await timedRun(c, runtime, `bench-${i}`));
    const leaks = await c.leaks();
    if (leaks.length > 0) throw new Error(`containerd ${version}: left behind after the runs:\n${leaks.join('\n')}`);
    const medians = Object.fromEntries(runtimes.map((r) => [r, Math.round(median(samples[r]))]));
    const line: Record<string, unknown> = {
      figure: 'ctr_run_rm_true',
      unit: 'ms',
      containerd: version,
      containerd_package: c.packageVersion,
      snapshotter: c.snapshotter,
      runs,
      medians,
    };
    if (runtimes.includes(RUNC) && runtimes.includes(STENCIL))
      line.ratio_stencil_runc = Number((median(samples[STENCIL]) / median(samples[RUNC])).toFixed(3));
    if (runs < 10) line.warning = `only ${runs} runs; a reported figure needs at least 10`;
    line.samples = Object.fromEntries(runtimes.map((r) => [r, samples[r].map(Math.round)]));
    return line;
  } finally {
    await c.stop();
  }
}

async function main() {
  const o = options();
  for (const version of o.versions) process.stdout.write(JSON.stringify(await benchVersion(version, o.runtimes, o.runs)) + '\n');
}

main().catch((err) => {
  process.stderr.write(`ctr bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
