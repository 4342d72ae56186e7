// Benchmark anchor: wall time of `ctr run --rm <busybox> true` (ctr's own start included) on a
// private real containerd, per runtime, runs interleaved, median of --runs (default 10, at least 10
// for a reported figure). One JSON line per containerd version on stdout; with both runc and
// Stencil in --runtimes it carries the Stencil/runc ratio. With --templates, Stencil's pods are
// cloned from a template made before timing (lib/ctr-run-bench.ts), and the line breaks the
// Stencil runs down from the shim's log.
//
//   node dist/integration-tests/bench/ctr-bench.js [--runtimes io.containerd.runc.v2,io.containerd.stencil.v2]
//        [--versions 1.6,2.1] [--runs 10] [--templates]
import { parseArgs } from 'node:util';
import { CONTAINERD_VERSIONS, type ContainerdVersion } from '../lib/containerd.js';
import { benchCtrVersion, RUNC } from '../lib/ctr-run-bench.js';

function options() {
  const { values } = parseArgs({
    options: {
      runtimes: { type: 'string', default: RUNC },
      versions: { type: 'string', default: CONTAINERD_VERSIONS.join(',') },
      runs: { type: 'string', default: process.env.STENCIL_BENCH_RUNS ?? '10' },
      templates: { type: 'boolean', default: false },
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
  return { runtimes, versions: versions as ContainerdVersion[], runs, templates: values.templates };
}

async function main() {
  const o = options();
  for (const version of o.versions)
    process.stdout.write(JSON.stringify(await benchCtrVersion({ version, runtimes: o.runtimes, runs: o.runs, templates: o.templates })) + '\n');
}

main().catch((err) => {
  process.stderr.write(`ctr bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
