// The shim's own `start` latency (on the critical path of every container start: containerd waits
// for it): `containerd-shim-stencil-v2 start` until it has printed the address of a listening
// daemon, against containerd's Go `containerd-shim-runc-v2 start` doing the same job, runs
// interleaved, median of --runs. Each daemon is then shut down with a Shutdown call over ttrpc.
//
//   node dist/integration-tests/bench/shim-start-bench.js [--runs 15]
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { messageType, TASK_SERVICE_V2 } from '../../shim/src/containerd/protos.js';
import { TtrpcClient } from '../../shim/src/ttrpc/client.js';
import { repoRoot } from '../../shim/src/util/paths.js';
import { harnessInfo } from '../lib/containerd.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function run(binary: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

async function startOnce(binary: string, dir: string, id: string): Promise<number> {
  const bundle = path.join(dir, id);
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', root: { path: 'rootfs' }, annotations: {} }));
  execFileSync('mkfifo', [path.join(bundle, 'log')]);
  const logFd = fs.openSync(path.join(bundle, 'log'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK); // as containerd holds it
  const address = path.join(dir, 'containerd.sock');
  const env = { ...process.env, TTRPC_ADDRESS: `${address}.ttrpc`, GRPC_ADDRESS: address, NAMESPACE: 'bench', MAX_SHIM_VERSION: '2' };
  const t0 = performance.now();
  const r = await run(binary, ['-namespace', 'bench', '-address', address, '-publish-binary', '/bin/true', '-id', id, 'start'], bundle, env);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`${binary} start failed (${r.code}): ${r.out}`);
  const sock = r.out.trim().replace(/^unix:\/\//, '');
  const client = await TtrpcClient.connect(sock);
  await client
    .invoke(TASK_SERVICE_V2, 'Shutdown', messageType('containerd.task.v2.ShutdownRequest'), { id, now: true }, messageType('google.protobuf.Empty'), { timeoutMs: 10_000 })
    .catch(() => undefined); // the daemon may close the connection while answering
  await client.close();
  for (let i = 0; i < 100 && fs.existsSync(sock); i++) await new Promise((res) => setTimeout(res, 50));
  fs.closeSync(logFd);
  return ms;
}

async function main() {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: process.env.STENCIL_BENCH_RUNS ?? '15' } } });
  const runs = Number(values.runs);
  const info = harnessInfo();
  const shims = {
    stencil: path.join(repoRoot(), 'bin', 'containerd-shim-stencil-v2'),
    runc: path.join(info.containerd['1.6'].dir, 'usr', 'bin', 'containerd-shim-runc-v2'),
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-shim-start-'));
  try {
    const samples: Record<string, number[]> = { stencil: [], runc: [] };
    await startOnce(shims.stencil, dir, 'warm-stencil');
    await startOnce(shims.runc, dir, 'warm-runc');
    for (let i = 0; i < runs; i++) for (const name of ['stencil', 'runc'] as const) samples[name]!.push(await startOnce(shims[name], dir, `${name}-${i}`));
    const s = median(samples.stencil!);
    const r = median(samples.runc!);
    process.stdout.write(
      JSON.stringify({
        figure: 'shim_start_latency',
        unit: 'ms',
        stencil_ms: Math.round(s),
        anchor: 'containerd-shim-runc-v2 start (containerd 1.6), same host, interleaved',
        anchor_ms: Math.round(r),
        ratio: Number((s / r).toFixed(3)),
        runs,
      }) + '\n',
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`shim start bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
