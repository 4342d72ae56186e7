// A private, real containerd (Debian's 1.6 or 2.1, unpacked by integration-tests/containerd/setup.sh)
// for tests: its own root/state dirs, sockets and config under a temp dir, `ctr` bound to it, the
// busybox image, a leak report ("nothing left behind") and a stop() that cleans up everything.
//
//   const c = await ContainerdInstance.start({ version: '1.6', extraPath: [path.join(repoRoot(), 'bin')] });
//   await c.importBusybox();
//   const r = await c.ctr(['run', '--rm', '--runtime', 'io.containerd.stencil.v2', c.image, 't1', 'echo', 'hi']);
//   assert.deepEqual(await c.leaks(), []);
//   await c.stop();
//
// Every process containerd starts (shims and their children) and every ctr run here carries the
// environment marker STENCIL_CONTAINERD_INSTANCE=<instance dir>; leaks() and stop() find them by it.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { socketOfDaemonAddress } from '../../shim/src/shim/address.js';
import { SPARE_DIR } from '../../shim/src/shim/spare.js';
import { repoRoot } from '../../shim/src/util/paths.js';
import { CriClient } from './cri.js';
import { configToml } from './containerd-config.js';
import { criConfigToml, CriNetwork, type CriOptions, freePort } from './cri-host.js';
import { isIdleSpare, isShim, isShimOf, isUnder, listMounts, markedProcesses, openers, walk, walkMatching } from './leaks.js';


export const CONTAINERD_VERSIONS = ['1.6', '2.1'] as const;
export type ContainerdVersion = (typeof CONTAINERD_VERSIONS)[number];
export const MARKER = 'STENCIL_CONTAINERD_INSTANCE';
/** Where shims put their sockets: fixed, whatever containerd's state dir is. */
export const SHIM_SOCKET_DIR = '/run/containerd/s';
const FIFO_DIR = '/run/containerd/fifo';

export interface HarnessInfo {
  containerd: Record<ContainerdVersion, { version: string; dir: string; bin: string; containerd: string; ctr: string }>;
  runc: { version: string; bin: string; runc: string };
  image: { name: string; tar: string; busybox: string };
  /** The CRI tests' sandbox image (integration-tests/containerd/pause-image.sh). */
  pause: { name: string; tar: string };
}

let harness: HarnessInfo | undefined;
/** Runs integration-tests/containerd/setup.sh (instant once cached) and reads what it set up. */
export function harnessInfo(): HarnessInfo {
  if (harness) return harness;
  const script = path.join(repoRoot(), 'integration-tests', 'containerd', 'setup.sh');
  let jsonPath: string;
  try {
    jsonPath = execFileSync(script, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${script} failed (a cold cache needs the Debian mirrors: run 'make integration-deps' on the build machine): ${e.stderr || e.message}`, { cause: err });
  }
  harness = JSON.parse(fs.readFileSync(jsonPath, 'utf8')) as HarnessInfo;
  return harness;
}

export interface StartOptions {
  version: ContainerdVersion;
  /** Directories put first on containerd's PATH (where shim binaries are found), e.g. <repo>/bin. */
  extraPath?: string[];
  /** containerd namespace for ctr; default a fresh `stencil-<random>` (runc keeps state per namespace). */
  namespace?: string;
  /** containerd's log level; "debug" also makes containerd pass -debug to shims. Default $STENCIL_CONTAINERD_LOG_LEVEL or "info". */
  logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** Default "overlayfs"; falls back to "native" when containerd reports overlayfs unusable here. */
  snapshotter?: 'overlayfs' | 'native';
  /** TOML appended to the generated config (e.g. plugin settings for a runtime). */
  configExtra?: string;
  /** More environment for containerd (and so for the shims it starts). */
  env?: Record<string, string>;
  /** More directories whose new entries or mounts count as leaks (e.g. a shim's state dir). */
  leakDirs?: string[];
  readyTimeoutMs?: number;
  /**
   * Turns containerd's CRI plugin on (off by default), with its pod network (lib/cri-host.ts):
   * runtime handlers `runc` (the default) plus `runtimes`, the pause image as sandbox image, CNI
   * from /usr/lib/cni with a private conflist, the stream server on 127.0.0.1. Then call
   * importCriImages() and talk to it with cri().
   */
  cri?: CriOptions;
}

export interface CtrOptions {
  /** Written to ctr's stdin; stdin is closed right after, or once stdout matches closeInputWhen. */
  input?: string | Buffer;
  /** Close stdin only once stdout matches (ctr drops a stdin EOF that comes before the task exists). */
  closeInputWhen?: RegExp;
  timeoutMs?: number;
  /** containerd namespace for this call (default the instance's own, e.g. CRI_NAMESPACE). */
  namespace?: string;
}

/** CRI's containerd namespace. */
export const CRI_NAMESPACE = 'k8s.io';

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface StopReport {
  killed: string[];
  unmounted: string[];
  removed: string[];
}

const DEFAULT_CTR_TIMEOUT_MS = Number(process.env.STENCIL_CTR_TIMEOUT_MS ?? 120_000);
const live = new Set<ContainerdInstance>();
process.on('exit', () => {
  for (const c of live) c.killSync();
});


export class ContainerdInstance {
  readonly version: ContainerdVersion;
  /** Debian package version of this containerd (e.g. 1.6.20~ds1-1+deb12u3). */
  readonly packageVersion: string;
  readonly dir: string;
  readonly root: string;
  readonly state: string;
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly configPath: string;
  readonly logPath: string;
  readonly namespace: string;
  /** The busybox image's name (after importBusybox()). */
  readonly image: string;
  snapshotter: 'overlayfs' | 'native';
  /** The pod network (when started with `cri`). */
  readonly criNetwork: CriNetwork | undefined;
  private readonly criOptions: CriOptions | undefined;
  private criClient: CriClient | undefined;
  private streamPort = 0;
  private readonly ctrPath: string;
  private readonly info: HarnessInfo;
  private readonly watched: string[];
  private readonly env: NodeJS.ProcessEnv;
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private baseline = new Map<string, string>();
  private baselineMounts = new Set<string>();
  private stopped = false;

  private constructor(o: StartOptions) {
    this.info = harnessInfo();
    this.version = o.version;
    const bins = this.info.containerd[o.version];
    if (!bins) throw new Error(`unknown containerd version ${JSON.stringify(o.version)} (have ${CONTAINERD_VERSIONS.join(', ')})`);
    this.packageVersion = bins.version;
    this.ctrPath = bins.ctr;
    this.image = this.info.image.name;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-ctd-'));
    this.root = path.join(this.dir, 'root');
    this.state = path.join(this.dir, 'state');
    this.address = path.join(this.dir, 'c.sock');
    this.ttrpcAddress = `${this.address}.ttrpc`;
    this.configPath = path.join(this.dir, 'config.toml');
    this.logPath = path.join(this.dir, 'containerd.log');
    this.namespace = o.namespace ?? `stencil-${crypto.randomBytes(4).toString('hex')}`;
    this.snapshotter = o.snapshotter ?? 'overlayfs';
    this.watched = [SHIM_SOCKET_DIR, FIFO_DIR, path.join('/run/containerd/runc', this.namespace), '/run/stencil', ...(o.leakDirs ?? [])];
    this.criOptions = o.cri;
    // CRI's runc state (runc's root is per containerd namespace) and the host-wide netns dir.
    if (o.cri) this.watched.push(path.join('/run/containerd/runc', CRI_NAMESPACE), '/run/netns');
    this.criNetwork = o.cri ? CriNetwork.create(this.dir) : undefined;
    this.env = {
      ...process.env,
      ...o.env,
      PATH: [
        ...(this.criNetwork ? [this.criNetwork.binDir] : []),
        ...(o.extraPath ?? []),
        bins.bin,
        this.info.runc.bin,
        process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      ].join(':'),
      [MARKER]: this.dir,
    };
    this.logLevel = o.logLevel ?? process.env.STENCIL_CONTAINERD_LOG_LEVEL ?? 'info';
    this.configExtra = o.configExtra;
  }

  private readonly logLevel: string;
  private configExtra: string | undefined;

  private writeConfig(): void {
    const opt = path.join(this.dir, 'opt');
    const common = { root: this.root, state: this.state, address: this.address, ttrpcAddress: this.ttrpcAddress, opt, logLevel: this.logLevel };
    const parts = [configToml({ version: this.version, cri: this.criNetwork !== undefined, ...common })];
    if (this.criNetwork)
      parts.push(
        criConfigToml({
          version: this.version,
          sandboxImage: this.info.pause.name,
          snapshotter: this.snapshotter,
          confDir: this.criNetwork.confDir,
          streamPort: this.streamPort,
          runtimes: this.criOptions?.runtimes ?? {},
        }),
      );
    if (this.configExtra) parts.push(this.configExtra, '');
    fs.writeFileSync(this.configPath, parts.join('\n'));
  }

  /** Starts a private containerd and waits until it answers `ctr version`. */
  static async start(o: StartOptions): Promise<ContainerdInstance> {
    const c = new ContainerdInstance(o);
    live.add(c);
    try {
      if (c.criNetwork) c.streamPort = await freePort();
      c.writeConfig();
      await c.launch(o.readyTimeoutMs ?? 90_000);
      if (c.criNetwork && c.snapshotter !== (o.snapshotter ?? 'overlayfs')) {
        // CRI was configured with the snapshotter that turned out unusable: again with the fallback.
        await c.terminate();
        c.writeConfig();
        await c.launch(o.readyTimeoutMs ?? 90_000);
      }
    } catch (err) {
      await c.stop().catch(() => undefined);
      throw err;
    }
    return c;
  }

  private async launch(readyTimeoutMs: number, { keepBaseline = false } = {}): Promise<void> {
    if (!keepBaseline) {
      this.baseline = this.scanWatched();
      this.baselineMounts = new Set(listMounts().map((m) => m.mountPoint));
    }
    const logFd = fs.openSync(this.logPath, 'a');
    const bin = this.info.containerd[this.version].containerd;
    const proc = spawn(bin, ['--config', this.configPath], { stdio: ['ignore', logFd, logFd], env: this.env, cwd: '/' });
    fs.closeSync(logFd);
    this.proc = proc;
    let exitNote = '';
    this.exited = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        exitNote = `containerd exited (${signal ?? code})`;
        resolve();
      }),
    );
    const t0 = Date.now();
    for (;;) {
      if (exitNote) throw new Error(`${exitNote} while starting; its log ${this.logPath}:\n${this.logTail()}`);
      const r = await this.ctr(['version'], { timeoutMs: 20_000 }).catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message }));
      if (r.code === 0 && /Server:/.test(r.stdout)) break;
      if (Date.now() - t0 > readyTimeoutMs)
        throw new Error(`containerd ${this.version} not ready after ${readyTimeoutMs} ms (ctr version: ${r.stderr.trim()}); log:\n${this.logTail()}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    if (this.snapshotter === 'overlayfs') {
      const plugins = await this.ctr(['plugins', 'ls']);
      const line = plugins.stdout.split('\n').find((l) => /^io\.containerd\.snapshotter\.v1\s+overlayfs\s/.test(l));
      if (!line || !/\sok\s*$/.test(line)) {
        process.stderr.write(`# containerd ${this.version}: overlayfs snapshotter unusable here (${line?.trim() ?? 'missing'}); using native\n`);
        this.snapshotter = 'native';
      }
    }
  }

  /** containerd's pid (undefined before start). */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** argv and environment to run this instance's ctr yourself (e.g. under a pty). */
  ctrCommand(args: string[], namespace = this.namespace): { file: string; args: string[]; env: NodeJS.ProcessEnv } {
    const env: NodeJS.ProcessEnv = { ...this.env };
    if (this.snapshotter !== 'overlayfs') env.CONTAINERD_SNAPSHOTTER = this.snapshotter;
    return { file: this.ctrPath, args: ['--address', this.address, '--namespace', namespace, ...args], env };
  }

  /** Starts ctr with pipes for stdin, stdout and stderr; the caller drives it. */
  spawnCtr(args: string[]): ChildProcess {
    const cmd = this.ctrCommand(args);
    return spawn(cmd.file, cmd.args, { env: cmd.env, stdio: ['pipe', 'pipe', 'pipe'] });
  }

  /** Runs ctr against this instance; rejects (killing ctr) after timeoutMs, with what it printed so far. */
  ctr(args: string[], o: CtrOptions = {}): Promise<CtrResult> {
    const cmd = this.ctrCommand(args, o.namespace);
    const timeoutMs = o.timeoutMs ?? DEFAULT_CTR_TIMEOUT_MS;
    const child = spawn(cmd.file, cmd.args, { env: cmd.env, stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let inputOpen = o.input !== undefined;
    const closeInput = () => {
      if (inputOpen) child.stdin?.end();
      inputOpen = false;
    };
    if (o.input !== undefined) {
      child.stdin!.on('error', () => undefined); // ctr may exit before reading everything
      child.stdin!.write(o.input);
      if (!o.closeInputWhen) closeInput();
    }
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (o.closeInputWhen?.test(stdout)) closeInput();
    });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`ctr ${args.join(' ')}: no exit within ${timeoutMs} ms; stdout: ${JSON.stringify(stdout)}, stderr: ${JSON.stringify(stderr)}`));
      }, timeoutMs);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot run ${cmd.file}: ${err.message}`));
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code: code ?? 128 + (os.constants.signals[signal as NodeJS.Signals] ?? 0), stdout, stderr });
      });
    });
  }

  /** Imports the busybox OCI tarball the setup built; returns the image name. */
  async importBusybox(): Promise<string> {
    const r = await this.ctr(['images', 'import', this.info.image.tar]);
    if (r.code !== 0) throw new Error(`ctr images import ${this.info.image.tar} failed (${r.code}): ${r.stderr}${r.stdout}`);
    const ls = await this.ctr(['images', 'ls', '-q']);
    if (!ls.stdout.split('\n').includes(this.image))
      throw new Error(`after import, ctr images ls does not list ${this.image}: ${ls.stdout}${ls.stderr}`);
    return this.image;
  }

  /** Imports the pause and busybox images into CRI's namespace (nothing is ever pulled); returns the busybox image's name. */
  async importCriImages(): Promise<string> {
    if (!this.criNetwork) throw new Error('importCriImages(): this containerd was started without cri');
    for (const tar of [this.info.pause.tar, this.info.image.tar]) {
      const r = await this.ctr(['images', 'import', tar], { namespace: CRI_NAMESPACE });
      if (r.code !== 0) throw new Error(`ctr -n ${CRI_NAMESPACE} images import ${tar} failed (${r.code}): ${r.stderr}${r.stdout}`);
    }
    const ls = await this.ctr(['images', 'ls', '-q'], { namespace: CRI_NAMESPACE });
    for (const name of [this.info.pause.name, this.image])
      if (!ls.stdout.split('\n').includes(name)) throw new Error(`after import, ctr -n ${CRI_NAMESPACE} images ls does not list ${name}: ${ls.stdout}${ls.stderr}`);
    return this.image;
  }

  /** The CRI client of this instance (one, closed by stop()). */
  cri(): CriClient {
    if (!this.criNetwork) throw new Error('cri(): this containerd was started without cri');
    this.criClient ??= new CriClient(this.address);
    return this.criClient;
  }

  /** The last lines of containerd's log (and so of the shims' logs it copies). */
  logTail(lines = 60): string {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  private scanWatched(): Map<string, string> {
    const out = new Map<string, string>();
    for (const d of this.watched) for (const [p, k] of walk(d)) out.set(p, k);
    for (const [p, k] of walkMatching('/dev/shm', /^stencil/)) out.set(p, k);
    return out;
  }

  private instanceProcesses() {
    return markedProcesses(MARKER, this.dir, new Set(this.proc?.pid ? [this.proc.pid] : []));
  }

  /** The pids of this instance's shim processes running now (started for container `id`, if given). */
  shimPids(id?: string): number[] {
    return this.instanceProcesses()
      .filter((p) => isShim(p) && !isIdleSpare(p) && (id === undefined || isShimOf(p, id)))
      .map((p) => p.pid);
  }

  /**
   * What is left behind now, one line per item ([] = nothing): shim processes and their children,
   * ctr processes, mounts under the instance or watched dirs, new sockets in /run/containerd/s,
   * FIFOs, VM RAM files (/dev/shm/stencil*), new entries under /run/stencil and leakDirs, and (while
   * containerd runs) its tasks, containers and active snapshots. With CRI also CRI's namespace's,
   * new entries in /run/netns and CRI's runc state dir, and the pod network's leftovers (veths,
   * CNI cache entries, IPAM allocations, portmap's iptables rules; the bridge after stop()).
   */
  async leaks(): Promise<string[]> {
    const out: string[] = [];
    const processes = this.instanceProcesses();
    // Stencil keeps one spare daemon per containerd waiting for the next pod; more is a leak.
    const spares = processes.filter(isIdleSpare);
    for (const p of processes) {
      if (spares.length === 1 && isIdleSpare(p)) continue;
      out.push(`${isShim(p) ? 'shim process' : 'process'} ${p.pid}: ${p.cmdline}`);
    }
    for (const m of listMounts()) {
      const watchedMount = this.watched.some((d) => isUnder(m.mountPoint, d)) && !this.baselineMounts.has(m.mountPoint);
      if (isUnder(m.mountPoint, this.dir) || watchedMount) out.push(`mount ${m.mountPoint} (${m.fsType} from ${m.source})`);
    }
    const added = [...this.scanWatched()].filter(([p]) => !this.baseline.has(p));
    // A socket, or a RAM file in /dev/shm, held (open or mapped) only by processes that are not
    // ours is someone else's: another containerd's, or a VM of tests running beside us.
    const shared = ([p, k]: [string, string]) => k === 'socket' || (k === 'file' && isUnder(p, '/dev/shm'));
    const owners = openers(added.filter(shared).map(([p]) => p), { mapped: true });
    const ours = new Set(this.instanceProcesses().map((p) => p.pid));
    const someoneElses = (p: string) => {
      const o = owners.get(p) ?? [];
      return o.length > 0 && !o.some((pid) => ours.has(pid));
    };
    for (const [p, kind] of added) {
      if (shared([p, kind]) && someoneElses(p)) continue;
      // The address a Stencil shim's `start` recorded beside its socket goes with that socket.
      const recordedFor = kind === 'file' && isUnder(p, SHIM_SOCKET_DIR) ? socketOfDaemonAddress(p) : undefined;
      if (recordedFor && someoneElses(recordedFor)) continue;
      if (kind === 'dir' && path.dirname(p) === '/dev/shm') continue; // the RAM file directory itself
      if (isUnder(p, SPARE_DIR)) continue; // spares' sockets and locks: a later spare takes them over
      out.push(`${kind} ${p}`);
    }
    for (const [p, kind] of walk(this.dir)) if (kind === 'fifo') out.push(`fifo ${p}`);
    if (!this.stopped && this.proc?.exitCode === null) {
      out.push(...(await this.namespaceLeaks(this.namespace, '')));
      if (this.criNetwork) out.push(...(await this.namespaceLeaks(CRI_NAMESPACE, `${CRI_NAMESPACE} `)));
    }
    if (this.criNetwork) out.push(...this.criNetwork.leaks());
    return out;
  }

  /** leaks() once it is empty or after `ms` (shims exit shortly after their last container goes). */
  async waitNoLeaks(ms = 10_000): Promise<string[]> {
    const t0 = Date.now();
    let l = await this.leaks();
    while (l.length > 0 && Date.now() - t0 < ms) {
      await sleep(200);
      l = await this.leaks();
    }
    return l;
  }

  /** Tasks, containers and active snapshots of one containerd namespace (each line prefixed). */
  private async namespaceLeaks(namespace: string, prefix: string): Promise<string[]> {
    const out: string[] = [];
    const [tasks, containers, snaps] = await Promise.all([
      this.ctr(['tasks', 'ls'], { namespace }),
      this.ctr(['containers', 'ls', '-q'], { namespace }),
      this.ctr(['snapshots', '--snapshotter', this.snapshotter, 'ls'], { namespace }),
    ]);
    for (const [what, r] of [['tasks ls', tasks], ['containers ls', containers], ['snapshots ls', snaps]] as const)
      if (r.code !== 0) out.push(`ctr -n ${namespace} ${what} failed (${r.code}), so its leaks are unknown: ${r.stderr.trim()}`);
    for (const l of tasks.stdout.trim().split('\n').slice(1)) if (l.trim()) out.push(`${prefix}task ${l.trim().replace(/\s+/g, ' ')}`);
    for (const l of containers.stdout.trim().split('\n')) if (l.trim()) out.push(`${prefix}container ${l.trim()}`);
    for (const l of snaps.stdout.trim().split('\n').slice(1)) if (/\sActive\s*$/.test(l)) out.push(`${prefix}active snapshot ${l.trim().split(/\s+/)[0]}`);
    return out;
  }

  /** Stops containerd: SIGTERM, then SIGKILL after 10 s; returns a note when it needed SIGKILL. */
  private async terminate(): Promise<string | undefined> {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return undefined;
    this.proc.kill('SIGTERM');
    const term = await Promise.race([this.exited.then(() => true), sleep(10_000, undefined, { ref: false }).then(() => false)]);
    if (term) return undefined;
    this.proc.kill('SIGKILL');
    await this.exited;
    return `containerd ${this.proc.pid} (did not exit on SIGTERM within 10 s)`;
  }

  /**
   * containerd killed (SIGKILL: no chance to tell its shims) and started again on the same root,
   * state and config (or with `configExtra` in place of the one it had), as after a crash or an
   * upgrade. The shims are left alone; what was there before the first start stays the baseline of leaks().
   */
  async restart(readyTimeoutMs = 90_000, o: { configExtra?: string } = {}): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) throw new Error('containerd is not running');
    this.proc.kill('SIGKILL');
    await this.exited;
    if (o.configExtra !== undefined) {
      this.configExtra = o.configExtra;
      this.writeConfig();
    }
    await this.launch(readyTimeoutMs, { keepBaseline: true });
  }

  /** Stops and removes every pod through CRI, so CNI tears the pods' network down (errors noted). */
  private async removeCriPods(report: StopReport): Promise<void> {
    const cri = this.cri();
    const pods = await cri.listPodSandbox().catch((e: Error) => {
      report.removed.push(`(CRI ListPodSandbox failed: ${e.message})`);
      return [];
    });
    await Promise.all(
      pods.map(async (p) => {
        try {
          await cri.stopPodSandbox(p.id);
          await cri.removePodSandbox(p.id);
          report.removed.push(`pod ${p.metadata.name} ${p.id}`);
        } catch (e) {
          report.removed.push(`(pod ${p.id}: ${(e as Error).message})`);
        }
      }),
    );
  }

  /** Last-resort cleanup when the test process exits: kill, never unmount or delete. */
  killSync(): void {
    if (this.stopped) return;
    try {
      this.proc?.kill('SIGKILL');
      for (const p of this.instanceProcesses()) process.kill(p.pid, 'SIGKILL');
    } catch {
      // exiting anyway
    }
  }

  /**
   * Stops containerd (SIGTERM, then SIGKILL), kills every remaining shim, child and ctr, unmounts
   * everything under the instance dir, removes stale shim sockets it left, and deletes the dir.
   * With CRI, first removes every pod through CRI, and at the end cleans the pod network up
   * (CriNetwork.cleanup(): rules, veths, bridge, CNI cache) and CRI's runc state. Idempotent. Returns what it had to clean up: after a clean scenario only containerd is killed.
   */
  async stop(): Promise<StopReport> {
    const report: StopReport = { killed: [], unmounted: [], removed: [] };
    if (this.stopped) return report;
    let containers: string[] = [];
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      const ls = await this.ctr(['containers', 'ls', '-q'], { timeoutMs: 20_000 }).catch(() => undefined);
      containers = ls?.stdout.split('\n').filter((l) => l !== '') ?? [];
      if (this.criNetwork) await this.removeCriPods(report);
      const note = await this.terminate();
      if (note) report.killed.push(note);
    }
    this.criClient?.close();
    for (let round = 0; round < 50; round++) {
      const procs = this.instanceProcesses();
      if (procs.length === 0) break;
      for (const p of procs) {
        if (round === 0) report.killed.push(`${p.pid}: ${p.cmdline}`);
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await sleep(100);
    }
    const mounts = listMounts().filter((m) => isUnder(m.mountPoint, this.dir)).reverse();
    for (const m of mounts) {
      try {
        execFileSync('umount', [m.mountPoint], { stdio: 'pipe' });
      } catch {
        execFileSync('umount', ['-l', m.mountPoint], { stdio: 'pipe' });
      }
      report.unmounted.push(m.mountPoint);
    }
    // What killed shims and detached ctr runs leave: their sockets, and the FIFO dirs of our
    // containers (ctr names the FIFOs <container id>-stdin|stdout|stderr) that nobody holds open.
    const added = [...this.scanWatched()].filter(([p]) => !this.baseline.has(p));
    const sockets = added.filter(([p, k]) => k === 'socket' && isUnder(p, SHIM_SOCKET_DIR)).map(([p]) => p);
    const fifos = added.filter(([p, k]) => k === 'fifo' && isUnder(p, FIFO_DIR)).map(([p]) => p);
    const open = openers([...sockets, ...fifos]);
    const unused = (p: string) => (open.get(p) ?? []).length === 0;
    for (const p of sockets.filter(unused)) {
      fs.rmSync(p, { force: true });
      report.removed.push(p);
    }
    // The addresses Stencil shims recorded beside their sockets (shim/src/shim/address.ts).
    for (const [p] of added.filter(([p, k]) => k === 'file' && isUnder(p, SHIM_SOCKET_DIR))) {
      const recordedFor = socketOfDaemonAddress(p);
      if (!recordedFor || fs.existsSync(recordedFor)) continue;
      fs.rmSync(p, { force: true });
      report.removed.push(p);
    }
    const fifoDirs = new Set(fifos.filter((p) => containers.some((id) => path.basename(p).startsWith(`${id}-std`))).map((p) => path.dirname(p)));
    for (const d of fifoDirs) {
      if (fifos.filter((p) => path.dirname(p) === d).every(unused)) {
        fs.rmSync(d, { recursive: true, force: true });
        report.removed.push(d);
      }
    }
    const left = listMounts().filter((m) => isUnder(m.mountPoint, this.dir));
    if (left.length > 0) throw new Error(`still mounted under ${this.dir}, not deleting it: ${left.map((m) => m.mountPoint).join(', ')}`);
    fs.rmSync(path.join('/run/containerd/runc', this.namespace), { recursive: true, force: true });
    if (this.criNetwork) {
      // CRI's runc state: only the entries of our containers (the dir is shared by every k8s.io user).
      const criRunc = path.join('/run/containerd/runc', CRI_NAMESPACE);
      for (const [p] of added) if (path.dirname(p) === criRunc) fs.rmSync(p, { recursive: true, force: true });
      report.removed.push(...this.criNetwork.cleanup());
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.stopped = true;
    live.delete(this);
    return report;
  }
}
