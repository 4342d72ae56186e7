// The shim's own `start` latency (on the critical path of every container start: containerd waits
// for it): `containerd-shim-stencil-v2 start` until it has printed the address of a listening
// daemon, against containerd's Go `containerd-shim-runc-v2 start` doing the same job, runs
// interleaved, median of --runs. Three figures: a new pod's start (the sandbox's: a daemon is
// spawned), the same until the new daemon has answered a Connect call (what containerd waits for
// before the task's Create gets anywhere), and an app container's start in that pod (its daemon
// runs: the address is looked up). Each daemon is then shut down with a Shutdown call over ttrpc.
// A new pod's figures twice: its daemon a spare (waiting, loaded, as the start before left it) and,
// with spare_daemon = false, spawned cold.
//
//   node dist/integration-tests/bench/shim-start-bench.js [--runs 15] [--stencil BINARY]
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { messageType, TASK_SERVICE_V2 } from '../../shim/src/containerd/protos.js';
import { isListening } from '../../shim/src/shim/address.js';
import { spareSocketPath } from '../../shim/src/shim/spare.js';
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

/** A bundle for task `id` (of CRI pod `sandbox`, when given), with the log FIFO containerd holds open. */
function makeBundle(dir: string, id: string, sandbox?: string): { bundle: string; logFd: number } {
  const bundle = path.join(dir, id);
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
  const annotations = sandbox ? { 'io.kubernetes.cri.sandbox-id': sandbox } : {};
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', root: { path: 'rootfs' }, annotations }));
  execFileSync('mkfifo', [path.join(bundle, 'log')]);
  return { bundle, logFd: fs.openSync(path.join(bundle, 'log'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK) };
}

/** How a shim is run: its binary, the containerd address it is given, extra environment. */
interface Shim {
  binary: string;
  address: string;
  env?: NodeJS.ProcessEnv;
  /** Before each pod: wait until this build's spare daemon for `address` listens. */
  spare?: boolean;
}

/** `start` of task `id` in its bundle: ms and the address printed. */
async function timedStart(shim: Shim, id: string, bundle: string): Promise<{ ms: number; address: string }> {
  const { binary, address } = shim;
  const env = { ...process.env, TTRPC_ADDRESS: `${address}.ttrpc`, GRPC_ADDRESS: address, NAMESPACE: 'bench', MAX_SHIM_VERSION: '2', ...shim.env };
  const t0 = performance.now();
  const r = await run(binary, ['-namespace', 'bench', '-address', address, '-publish-binary', '/bin/true', '-id', id, 'start'], bundle, env);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`${binary} start failed (${r.code}): ${r.out}`);
  return { ms, address: r.out.trim() };
}

/**
 * A CRI pod's two starts: the sandbox's (a new daemon) and then an app container's (the pod's
 * daemon is running: only its address is looked up). ms of each; the daemon is then shut down.
 */
async function startPod(shim: Shim, dir: string, id: string): Promise<{ newPodMs: number; newPodServingMs: number; runningPodMs: number }> {
  const { binary } = shim;
  const sandbox = makeBundle(dir, id, id);
  const app = makeBundle(dir, `${id}-app`, id);
  if (shim.spare) await waitForSpare(shim.address);
  const t0 = performance.now();
  const first = await timedStart(shim, id, sandbox.bundle);
  // As containerd goes on: connect and call, which the new daemon answers once it has loaded.
  const sock = first.address.replace(/^unix:\/\//, '');
  const client = await TtrpcClient.connect(sock);
  await client.invoke(TASK_SERVICE_V2, 'Connect', messageType('containerd.task.v2.ConnectRequest'), { id }, messageType('containerd.task.v2.ConnectResponse'), { timeoutMs: 30_000 });
  const newPodServingMs = performance.now() - t0;
  const second = await timedStart(shim, `${id}-app`, app.bundle);
  if (second.address !== first.address) throw new Error(`${binary}: the app container got ${second.address}, not its pod's ${first.address}`);
  await client
    .invoke(TASK_SERVICE_V2, 'Shutdown', messageType('containerd.task.v2.ShutdownRequest'), { id, now: true }, messageType('google.protobuf.Empty'), { timeoutMs: 10_000 })
    .catch(() => undefined); // the daemon may close the connection while answering
  await client.close();
  for (let i = 0; i < 100 && fs.existsSync(sock); i++) await new Promise((res) => setTimeout(res, 50));
  fs.closeSync(sandbox.logFd);
  fs.closeSync(app.logFd);
  return { newPodMs: first.ms, newPodServingMs, runningPodMs: second.ms };
}

async function waitForSpare(address: string): Promise<void> {
  const socket = spareSocketPath(address, path.join(repoRoot(), 'dist', 'shim-bundle', 'main.js'));
  for (let i = 0; i < 600; i++) {
    if (await isListening(socket)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no spare daemon listened at ${socket} within 60 s`);
}

async function main() {
  // --stencil BINARY: another build's shim (e.g. a worktree of an older commit), for a before/after.
  const { values } = parseArgs({ options: { runs: { type: 'string', default: process.env.STENCIL_BENCH_RUNS ?? '15' }, stencil: { type: 'string' } } });
  const runs = Number(values.runs);
  const info = harnessInfo();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-shim-start-'));
  // containerd's socket as the shims see it: a spare daemon stays while something listens there.
  const containerd = net.createServer((c) => c.destroy());
  await new Promise<void>((resolve) => containerd.listen(path.join(dir, 'containerd.sock'), resolve));
  const coldConfig = path.join(dir, 'no-spare.toml');
  fs.writeFileSync(coldConfig, '[runtime]\nspare_daemon = false\n');
  const stencil = values.stencil ?? path.join(repoRoot(), 'bin', 'containerd-shim-stencil-v2');
  // Spares need a shared root mount (systemd's default; shim/launcher/spare.h): without one, the
  // spare figures are left out, saying so.
  const rootShared = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4] === '/').at(-1)?.includes(' shared:') ?? false;
  if (!rootShared) process.stderr.write('shim-start-bench: the root mount is private here, so no spare daemons: the spare figures are left out\n');
  const shims: Record<string, Shim> = {
    // the pod's daemon comes from a spare, which the previous start left (as on a busy node)
    ...(rootShared ? { stencil: { binary: stencil, address: path.join(dir, 'containerd.sock'), spare: true } } : {}),
    // spare_daemon = false: every new pod's start spawns Node
    'stencil-cold': { binary: stencil, address: path.join(dir, 'cold.sock'), env: { STENCIL_CONFIG: coldConfig } },
    runc: { binary: path.join(info.containerd['1.6'].dir, 'usr', 'bin', 'containerd-shim-runc-v2'), address: path.join(dir, 'containerd.sock') },
  };
  try {
    const samples: Record<string, Awaited<ReturnType<typeof startPod>>[]> = Object.fromEntries(Object.keys(shims).map((name) => [name, []]));
    // the first start of all finds no spare: it leaves one
    for (const name of Object.keys(shims)) await startPod({ ...shims[name]!, spare: false }, dir, `warm-${name}`);
    for (let i = 0; i < runs; i++) for (const name of Object.keys(shims)) samples[name]!.push(await startPod(shims[name]!, dir, `${name}-${i}`));
    for (const [figure, which, what, variant] of [
      ['shim_start_latency', 'newPodMs', "a new pod's start (a spare daemon takes the pod)", 'stencil'],
      ['shim_start_to_serving', 'newPodServingMs', "a new pod's start, then a Connect call until its daemon (a spare) answers it", 'stencil'],
      ['shim_start_latency_cold', 'newPodMs', "a new pod's start with spare_daemon = false (spawns Node)", 'stencil-cold'],
      ['shim_start_to_serving_cold', 'newPodServingMs', "a new pod's start with spare_daemon = false, then a Connect call until the new daemon answers it", 'stencil-cold'],
      ['shim_start_latency_running_pod', 'runningPodMs', "an app container's start (the pod's daemon runs)", 'stencil-cold'],
    ] as const) {
      if (!samples[variant]) continue;
      const s = median(samples[variant]!.map((x) => x[which]));
      const r = median(samples.runc!.map((x) => x[which]));
      process.stdout.write(
        JSON.stringify({
          figure,
          what,
          unit: 'ms',
          stencil_ms: Number(s.toFixed(1)),
          anchor: 'containerd-shim-runc-v2 start (containerd 1.6), same host, interleaved',
          anchor_ms: Number(r.toFixed(1)),
          ratio: Number((s / r).toFixed(3)),
          runs,
        }) + '\n',
      );
    }
  } finally {
    await new Promise((resolve) => containerd.close(resolve)); // the spare leaves within 10 s
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`shim start bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
