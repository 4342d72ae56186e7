// The host side of a process's stdio, as containerd hands it over in Create/Exec: FIFOs (plain
// paths, opened by the client already), `file://` log files, `binary://` logging programs, or
// nothing. The pod side (agent streams) is connected with relay(); exit reporting waits for the
// relay to drain (bounded), so TaskExit follows the process's last output byte.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../util/log.js';
import type { ProcessStdio } from '../pod/types.js';
import { Code, RpcError } from '../rpc/errors.js';

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

/** What the pod must provide for these paths (stderr never in terminal mode: the pty merges it). */
export function stdioMode(paths: StdioPaths): { terminal: boolean; stdin: boolean; stdout: boolean; stderr: boolean } {
  return { terminal: paths.terminal, stdin: !!paths.stdin, stdout: !!paths.stdout, stderr: !!paths.stderr && !paths.terminal };
}

/** How long a finished process's output may take to reach its reader before the exit is reported anyway. */
const DRAIN_LIMIT_MS = 10_000;
const STDIN_EOF_WAIT_MS = 2_000;
const BINARY_READY_TIMEOUT_MS = 10_000;
const BINARY_STOP_GRACE_MS = 12_000;

export class HostStdio {
  private stdin?: net.Socket;
  private podStdin?: Writable;
  private stdinEnded = false;
  private outputs: { stdout?: Writable; stderr?: Writable } = {};
  private logger?: ChildProcess;
  private relays: Promise<unknown>[] = [];
  /** The pod's ends of the streams relayed now. */
  private podStreams?: ProcessStdio;

  private constructor(
    readonly paths: StdioPaths,
    private readonly log: Logger,
  ) {}

  /** Opens the host ends. Errors name the stream and path; nothing stays open on failure. */
  static async open(paths: StdioPaths, ids: { containerId: string; namespace: string }, log: Logger): Promise<HostStdio> {
    const io = new HostStdio(paths, log);
    try {
      if (paths.stdin) io.stdin = openFifoForReading(paths.stdin);
      const outUri = paths.stdout;
      const errUri = paths.terminal ? '' : paths.stderr;
      if (outUri.startsWith('binary://') || errUri.startsWith('binary://')) {
        const [out, err] = await io.startBinaryLogger(outUri || errUri, ids);
        io.outputs = { stdout: outUri ? out : undefined, stderr: errUri ? err : undefined };
      } else if (outUri.startsWith('file://') && outUri === errUri) {
        // One file for both streams, as containerd's `--log-uri file://` does.
        const file = openLogFile(outUri);
        io.outputs = { stdout: file, stderr: file };
      } else {
        io.outputs = { stdout: outUri ? openOutput(outUri, 'stdout') : undefined, stderr: errUri ? openOutput(errUri, 'stderr') : undefined };
      }
      return io;
    } catch (err) {
      io.close();
      throw err;
    }
  }

  /** Connects the pod's streams of the process to the host ends. */
  relay(pod: ProcessStdio): void {
    this.podStreams = pod;
    if (this.stdin && pod.stdin) {
      this.podStdin = pod.stdin;
      this.stdin.once('end', () => (this.stdinEnded = true));
      // The FIFO's EOF (the client closed its end) closes the process's stdin.
      this.stdin.pipe(pod.stdin);
      pod.stdin.on('error', (err) => this.log.debug('stdin relay ended', { err: String(err) }));
    }
    this.pipeOutput(pod.stdout, this.outputs.stdout, 'stdout');
    this.pipeOutput(pod.stderr, this.outputs.stderr, 'stderr');
  }

  private pipeOutput(from: Readable | undefined, to: Writable | undefined, name: string): void {
    if (!from) return;
    if (!to) {
      from.resume(); // nobody wants it: drain so the process never blocks
      return;
    }
    const done = new Promise<void>((resolve) => {
      from.on('end', resolve);
      from.on('error', (err) => {
        this.log.warn(`${name} relay failed`, { err: String(err) });
        resolve();
      });
    });
    from.pipe(to, { end: false });
    this.relays.push(done.then(() => flushed(to)));
  }

  /**
   * Lets go of the pod's streams without ending them (a pod migration): everything the agent read
   * reaches the host ends, later output waits in the guest for the next relay(); stdin stays open.
   */
  async detachFromPod(): Promise<void> {
    const pod = this.podStreams;
    this.podStreams = undefined;
    if (!pod) return;
    if (this.stdin && pod.stdin) this.stdin.unpipe(pod.stdin);
    this.podStdin = undefined;
    type Detachable = { detach?: () => Promise<void> };
    await Promise.all([pod.stdin, pod.stdout, pod.stderr].map((s) => (s as Detachable | undefined)?.detach?.()));
    await Promise.all(this.relays);
  }

  /** Resolves when all output has been handed to the readers, or after DRAIN_LIMIT_MS. */
  async drained(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.log.warn('process output still not drained; reporting the exit anyway', { limitMs: DRAIN_LIMIT_MS });
        resolve();
      }, DRAIN_LIMIT_MS);
    });
    await Promise.race([Promise.all(this.relays), limit]);
    clearTimeout(timer);
  }

  /**
   * CloseIO(stdin): the client has written everything. Bytes may still sit in the FIFO, so let
   * the relay reach the FIFO's EOF first (bounded), then close the process's stdin.
   */
  async closeStdin(): Promise<void> {
    const fifo = this.stdin;
    if (fifo && !this.stdinEnded) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, STDIN_EOF_WAIT_MS);
        fifo.once('end', () => {
          clearTimeout(timer);
          resolve();
        });
        fifo.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (fifo) fifo.unpipe();
    fifo?.destroy();
    this.stdin = undefined;
    this.podStdin?.end();
    this.podStdin = undefined;
  }

  /** Closes every host end (FIFO write ends included, so readers see EOF). Idempotent. */
  close(): void {
    this.stdin?.destroy();
    this.stdin = undefined;
    const seen = new Set<Writable>();
    for (const s of [this.outputs.stdout, this.outputs.stderr]) {
      if (s && !seen.has(s)) {
        seen.add(s);
        s.end();
      }
    }
    this.outputs = {};
    const logger = this.logger;
    this.logger = undefined;
    if (logger && logger.exitCode === null) {
      const kill = setTimeout(() => logger.kill('SIGKILL'), BINARY_STOP_GRACE_MS);
      kill.unref();
      logger.once('exit', () => clearTimeout(kill));
      logger.kill('SIGTERM');
    }
  }

  /** binary:///path?k=v: fd 3 = stdout, fd 4 = stderr, fd 5 = readiness, env only the ids. */
  private async startBinaryLogger(uri: string, ids: { containerId: string; namespace: string }): Promise<[Writable, Writable]> {
    const url = parseUri(uri, 'binary');
    const args: string[] = [];
    for (const [k, v] of url.searchParams) args.push(k, v);
    const child = spawn(url.pathname, args, {
      env: { CONTAINER_ID: ids.containerId, CONTAINER_NAMESPACE: ids.namespace },
      stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
      detached: true,
    });
    this.logger = child;
    const ready = (child.stdio as unknown as Readable[])[5]!;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new RpcError(Code.Internal, `logging binary ${url.pathname} did not get ready in ${BINARY_READY_TIMEOUT_MS} ms`)), BINARY_READY_TIMEOUT_MS);
      const finish = (err?: Error) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      child.once('error', (err) => finish(new RpcError(Code.InvalidArgument, `cannot run logging binary ${url.pathname}: ${err.message}`)));
      ready.once('data', () => finish());
      ready.once('end', () => finish());
      ready.resume();
    });
    ready.destroy();
    return [child.stdio[3] as Writable, child.stdio[4] as Writable];
  }
}

function parseUri(uri: string, scheme: string): URL {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new RpcError(Code.InvalidArgument, `stdio: malformed URI ${JSON.stringify(uri)}`);
  }
  if (url.protocol !== `${scheme}:` || !path.isAbsolute(decodeURIComponent(url.pathname))) {
    throw new RpcError(Code.InvalidArgument, `stdio: ${JSON.stringify(uri)} must be ${scheme}:///absolute/path`);
  }
  return url;
}

function openOutput(value: string, name: string): Writable {
  if (value.startsWith('file://')) return openLogFile(value);
  if (value.includes('://') && !value.startsWith('fifo://')) {
    throw new RpcError(Code.InvalidArgument, `${name}: unsupported stdio URI scheme in ${JSON.stringify(value)} (fifo path, file:// or binary://)`);
  }
  const p = value.startsWith('fifo://') ? value.slice('fifo://'.length) : value;
  if (!path.isAbsolute(p)) throw new RpcError(Code.InvalidArgument, `${name}: stdio path ${JSON.stringify(value)} is not absolute`);
  // O_RDWR never blocks on open and keeps writes from failing while no reader is attached.
  let fd: number;
  try {
    fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw new RpcError(Code.InvalidArgument, `${name}: cannot open ${p}: ${(err as Error).message}`);
  }
  if (!fs.fstatSync(fd).isFIFO()) {
    fs.closeSync(fd);
    throw new RpcError(Code.InvalidArgument, `${name}: ${p} is not a FIFO`);
  }
  const sock = new net.Socket({ fd, readable: false, writable: true });
  sock.on('error', () => undefined); // a vanished reader must not crash the shim
  return sock;
}

function openLogFile(uri: string): Writable {
  const file = decodeURIComponent(parseUri(uri, 'file').pathname);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const stream = fs.createWriteStream(file, { flags: 'a' });
  stream.on('error', () => undefined);
  return stream;
}

function openFifoForReading(p: string): net.Socket {
  if (!path.isAbsolute(p)) throw new RpcError(Code.InvalidArgument, `stdin: path ${JSON.stringify(p)} is not absolute`);
  let fd: number;
  try {
    // O_NONBLOCK: a blocking open would wait for a writer (kata-containers/runtime#1659).
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw new RpcError(Code.InvalidArgument, `stdin: cannot open ${p}: ${(err as Error).message}`);
  }
  const sock = new net.Socket({ fd, readable: true, writable: false });
  sock.on('error', () => undefined);
  return sock;
}

function flushed(stream: Writable): Promise<void> {
  if (stream.writableLength === 0 || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (stream.writableLength === 0 || stream.destroyed) {
        stream.off('drain', check);
        stream.off('close', check);
        resolve();
      }
    };
    stream.on('drain', check);
    stream.on('close', check);
  });
}
