// AgentClient: the shim's typed, promise-based view of the guest agent (proto/agent.proto).
// One control connection carries every call (concurrently, matched by request id); each stdio
// stream of a process gets a connection of its own (see stdio.ts). Connections are opened by
// a caller-supplied function, so the same client works over the VMM's hybrid vsock
// (`() => connectVsock(udsPath, 1024)`) and over a plain Unix socket in tests.
import net from 'node:net';
import os from 'node:os';
import type { Duplex, Readable, Writable } from 'node:stream';
import type { Logger } from '../util/log.js';
import {
  AgentCallError,
  AgentConnectionError,
  type AgentErrorCode,
  type AgentErrorContext,
  AgentTimeoutError,
} from './errors.js';
import { encodeFrame, type Frame, FrameDecoder, FrameKind } from './framing.js';
import {
  agentTypes,
  decodeMessage,
  encodeMessage,
  errorCodeName,
  PROTOCOL_VERSION,
  Role,
  type WireError,
} from './protocol.js';
import { AgentPortStream } from './port-stream.js';
import { AgentInputStream, AgentOutputStream } from './stdio.js';

/** Opens a new stream connection to the agent (for the control channel and every stdio stream). */
export type AgentConnector = () => Promise<net.Socket>;

export interface AgentClientOptions {
  connect: AgentConnector;
  /** Default timeout of a call in ms (0 = none). WaitProcess has none unless a call sets one. */
  timeoutMs?: number;
  /** Timeout for opening a connection and its hello, in ms. */
  connectTimeoutMs?: number;
  logger?: Logger;
}

export interface CallOptions {
  /** Overrides the client's default timeout for this call (0 = none). */
  timeoutMs?: number;
}

export interface StdioMode {
  /** One pty instead of pipes; must match `process.terminal` in the OCI JSON. */
  terminal?: boolean;
  stdin?: boolean;
  stdout?: boolean;
  stderr?: boolean;
}

/**
 * A pod's sandbox container held by the agent's own pause process instead of crun (proto
 * PauseHolder): the namespaces made for it, its hostname and cgroup.
 */
export interface PauseHolder {
  /** Any of "pid", "ipc", "uts", "mount", "cgroup". */
  namespaces: string[];
  hostname?: string;
  /** Absolute from the cgroup root; undefined leaves it in the agent's. */
  cgroup?: string;
}

export interface GuestMount {
  source: string;
  target: string;
  fstype: string;
  /** mount(8)-style options, e.g. ['trans=virtio', 'version=9p2000.L', 'ro']. */
  options?: string[];
}

export interface SetupGuestRequest {
  /** Wall-clock time to set in the guest. */
  time?: Date;
  hostname?: string;
  /** Up to 4096 bytes credited to the guest's entropy pool. */
  entropy?: Uint8Array;
  mounts?: GuestMount[];
  /** The pod's NIC (network/pod-network.ts): MAC, MTU, addresses; then routes. */
  interfaces?: Array<{ name: string; mac: string; mtu: number; addresses: string[] }>;
  routes?: Array<{ destination: string; gateway: string; device: string }>;
  /** net.* sysctls of the pod, written to the guest's /proc/sys after the network. */
  sysctls?: Record<string, string>;
}

export interface PingResult {
  agentVersion: string;
  protocolVersion: number;
  uptimeNs: bigint;
  /** The guest's vsock CID as its kernel sees it (0: unknown). */
  guestCid: number;
}

export interface ProcessExit {
  /** Exit code, or 128 + signal number. */
  exitStatus: number;
  exitedAt: Date;
  exitedAtUnixNs: bigint;
  oomKilled: boolean;
}

export interface ContainerStats {
  cgroup: string;
  cpu: { usageUsec: number; userUsec: number; systemUsec: number; nrPeriods: number; nrThrottled: number; throttledUsec: number };
  memory: {
    current: number;
    /** 0 = no limit. */
    limit: number;
    peak: number;
    anon: number;
    file: number;
    swapCurrent: number;
    oomEvents: number;
    oomKillEvents: number;
  };
  /** limit 0 = no limit. */
  pids: { current: number; limit: number };
  io: { readBytes: number; writeBytes: number; readIos: number; writeIos: number };
}

export interface ProcessStdio {
  stdin?: Writable;
  stdout?: Readable;
  stderr?: Readable;
}

type OciJson = string | Uint8Array | object;

interface Pending {
  resolve: (result: Record<string, unknown> | undefined) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
  ctx: AgentErrorContext;
  resultField: string;
}

interface Opened {
  socket: net.Socket;
  decoder: FrameDecoder;
  leftover: Frame[];
}

const DEFAULT_TIMEOUT_MS = 60_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * Whether the agent may start a container by writing crun's exec FIFO itself (proto
 * start_through_exec_fifo): not when its spec has poststart hooks, which only `crun start` runs,
 * nor for a spec that is not JSON (crun's create refuses it anyway).
 */
function startsThroughExecFifo(spec: OciJson): boolean {
  let value: unknown = spec;
  if (typeof spec === 'string' || spec instanceof Uint8Array) {
    try {
      value = JSON.parse(Buffer.from(spec).toString());
    } catch {
      return false;
    }
  }
  if (typeof value !== 'object' || value === null) return false;
  const poststart = (value as { hooks?: { poststart?: unknown } }).hooks?.poststart;
  return !(Array.isArray(poststart) && poststart.length > 0);
}

function ociBytes(value: OciJson): Uint8Array {
  if (typeof value === 'string') return Buffer.from(value);
  if (value instanceof Uint8Array) return value;
  return Buffer.from(JSON.stringify(value));
}

function signalNumber(signal: number | NodeJS.Signals): number {
  if (typeof signal === 'number') return signal;
  const n = os.constants.signals[signal];
  if (n === undefined) throw new TypeError(`unknown signal ${signal}`);
  return n;
}

const num = (v: unknown): number => Number(v ?? 0);

/**
 * Opens a connection and exchanges the hello. Resolves with the socket paused and any frames
 * that followed the reply; rejects with an AgentCallError if the agent refused.
 */
async function openConnection(
  connect: AgentConnector,
  hello: { role: Role; containerId?: string; execId?: string; port?: number },
  ctx: AgentErrorContext,
  timeoutMs: number,
): Promise<Opened> {
  const { Hello, HelloReply } = agentTypes();
  let timer: NodeJS.Timeout | undefined;
  let socket: net.Socket | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AgentTimeoutError('DEADLINE_EXCEEDED', `no hello reply within ${timeoutMs} ms`, ctx)), timeoutMs);
  });
  const connecting = connect().catch((err: Error) => {
    throw new AgentConnectionError('UNAVAILABLE', `cannot connect: ${err.message}`, ctx, { cause: err });
  });
  try {
    socket = await Promise.race([connecting, timeout]);
    const s = socket;
    const decoder = new FrameDecoder();
    const reply = new Promise<Opened>((resolve, reject) => {
      const cleanup = () => {
        s.off('data', onData);
        s.off('error', onError);
        s.off('close', onClose);
      };
      const onData = (chunk: Buffer) => {
        let frames: Frame[];
        try {
          frames = decoder.push(chunk);
        } catch (err) {
          cleanup();
          reject(new AgentConnectionError('PROTOCOL', (err as Error).message, ctx));
          return;
        }
        if (frames.length === 0) return;
        cleanup();
        s.pause();
        const [first, ...leftover] = frames;
        if (first.kind !== FrameKind.HelloReply) {
          reject(new AgentCallError('PROTOCOL', `expected a HELLO_REPLY frame, got kind ${first.kind}`, ctx));
          return;
        }
        const r = decodeMessage<{ version: number; error: WireError | null }>(HelloReply, first.payload);
        if (r.error) {
          reject(new AgentCallError(errorCodeName(r.error.code) as AgentErrorCode, r.error.message, ctx));
          return;
        }
        resolve({ socket: s, decoder, leftover });
      };
      const onError = (err: Error) => {
        cleanup();
        reject(new AgentConnectionError('UNAVAILABLE', err.message, ctx, { cause: err }));
      };
      const onClose = () => {
        cleanup();
        reject(new AgentConnectionError('UNAVAILABLE', 'the agent closed the connection during the hello', ctx));
      };
      s.on('data', onData);
      s.on('error', onError);
      s.on('close', onClose);
      s.resume();
    });
    s.write(
      encodeFrame(
        FrameKind.Hello,
        encodeMessage(Hello, { version: PROTOCOL_VERSION, role: hello.role, containerId: hello.containerId ?? '', execId: hello.execId ?? '', port: hello.port ?? 0 }),
      ),
    );
    return await Promise.race([reply, timeout]);
  } catch (err) {
    socket?.destroy();
    // Timed out while connecting: a connection made later must not stay open (an fd here, and a
    // connection in the guest whose agent waits for its hello).
    if (!socket) connecting.then((late) => late.destroy(), () => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

export class AgentClient {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedBy: string | undefined;
  private readonly timeoutMs: number;
  private readonly connectTimeoutMs: number;

  private constructor(
    private readonly options: AgentClientOptions,
    private readonly socket: net.Socket,
    private readonly decoder: FrameDecoder,
    leftover: Frame[],
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    socket.on('data', (chunk: Buffer) => this.onChunk(chunk));
    socket.on('error', (err) => this.shutdown(`connection failed: ${err.message}`));
    socket.on('close', () => this.shutdown('the agent closed the control connection'));
    for (const frame of leftover) this.onFrame(frame);
    socket.resume();
  }

  /** Opens the control connection. */
  static async connect(options: AgentClientOptions): Promise<AgentClient> {
    const timeout = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const { socket, decoder, leftover } = await openConnection(options.connect, { role: Role.Control }, { rpc: 'Connect' }, timeout);
    return new AgentClient(options, socket, decoder, leftover);
  }

  /** True once the control connection is gone; every later call fails. */
  get closed(): boolean {
    return this.closedBy !== undefined;
  }

  /** Closes the control connection; pending calls fail with `reason`. Open stdio streams are not affected. */
  close(reason = 'the client was closed'): void {
    this.shutdown(reason);
    this.socket.destroy();
  }

  // ---- guest ----

  async ping(opts: CallOptions = {}): Promise<PingResult> {
    const r = await this.call('ping', {}, { rpc: 'Ping' }, opts);
    return { agentVersion: String(r?.agentVersion ?? ''), protocolVersion: num(r?.protocolVersion), uptimeNs: BigInt(String(r?.uptimeNs ?? 0)), guestCid: num(r?.guestCid) };
  }

  async setupGuest(req: SetupGuestRequest, opts: CallOptions = {}): Promise<void> {
    const timeUnixNs = req.time ? (BigInt(req.time.getTime()) * 1_000_000n).toString() : '0';
    await this.call(
      'setupGuest',
      {
        timeUnixNs,
        hostname: req.hostname ?? '',
        entropy: req.entropy ?? Buffer.alloc(0),
        mounts: (req.mounts ?? []).map((m) => ({ ...m, options: m.options ?? [] })),
        interfaces: req.interfaces ?? [],
        routes: req.routes ?? [],
        sysctls: req.sysctls ?? {},
      },
      { rpc: 'SetupGuest' },
      opts,
    );
  }

  // ---- containers ----

  /**
   * Creates the container (init waits for startContainer). Returns the init pid. With `pause`,
   * the agent's own pause process holds it (the spec is then not used).
   */
  async createContainer(containerId: string, ociSpec: OciJson, stdio: StdioMode, opts: CallOptions & { pause?: PauseHolder } = {}): Promise<number> {
    const pause = opts.pause && { namespaces: opts.pause.namespaces, hostname: opts.pause.hostname ?? '', cgroup: opts.pause.cgroup ?? '' };
    const r = await this.call(
      'createContainer',
      { containerId, ociSpecJson: ociBytes(ociSpec), stdio: wireStdio(stdio), startThroughExecFifo: !pause && startsThroughExecFifo(ociSpec), ...(pause ? { pause } : {}) },
      { rpc: 'CreateContainer', containerId },
      opts,
    );
    return num(r?.pid);
  }

  async startContainer(containerId: string, opts: CallOptions = {}): Promise<number> {
    const r = await this.call('startContainer', { containerId }, { rpc: 'StartContainer', containerId }, opts);
    return num(r?.pid);
  }

  /** Starts a process in a running container from an OCI `process` object. Returns its pid. */
  async execProcess(containerId: string, execId: string, processSpec: OciJson, stdio: StdioMode, opts: CallOptions = {}): Promise<number> {
    const r = await this.call(
      'execProcess',
      { containerId, execId, processJson: ociBytes(processSpec), stdio: wireStdio(stdio) },
      { rpc: 'ExecProcess', containerId, execId },
      opts,
    );
    return num(r?.pid);
  }

  /** execId '' is the init process; `all` (init only) signals every process of the container. */
  async signalProcess(
    containerId: string,
    execId: string,
    signal: number | NodeJS.Signals,
    opts: CallOptions & { all?: boolean } = {},
  ): Promise<void> {
    const ctx = { rpc: 'SignalProcess', containerId, execId };
    await this.call('signalProcess', { containerId, execId, signal: signalNumber(signal), all: opts.all ?? false }, ctx, opts);
  }

  /** Resolves when the process has exited. No timeout unless opts.timeoutMs is given. */
  async waitProcess(containerId: string, execId: string, opts: CallOptions = {}): Promise<ProcessExit> {
    const r = await this.call('waitProcess', { containerId, execId }, { rpc: 'WaitProcess', containerId, execId }, {
      timeoutMs: opts.timeoutMs ?? 0,
    });
    const ns = BigInt(String(r?.exitedAtUnixNs ?? 0));
    return {
      exitStatus: num(r?.exitStatus),
      exitedAtUnixNs: ns,
      exitedAt: new Date(Number(ns / 1_000_000n)),
      oomKilled: Boolean(r?.oomKilled),
    };
  }

  async resizePty(containerId: string, execId: string, size: { width: number; height: number }, opts: CallOptions = {}): Promise<void> {
    await this.call('resizePty', { containerId, execId, ...size }, { rpc: 'ResizePty', containerId, execId }, opts);
  }

  /** Closes the process's stdin (after the data of an attached stdin stream, if any). */
  async closeStdin(containerId: string, execId: string, opts: CallOptions = {}): Promise<void> {
    await this.call('closeStdin', { containerId, execId }, { rpc: 'CloseStdin', containerId, execId }, opts);
  }

  async stats(containerId: string, opts: CallOptions = {}): Promise<ContainerStats> {
    const r = (await this.call('stats', { containerId }, { rpc: 'Stats', containerId }, opts)) ?? {};
    const part = (name: string, fields: string[]) => {
      const src = (r[name] ?? {}) as Record<string, unknown>;
      return Object.fromEntries(fields.map((f) => [f, num(src[f])]));
    };
    return {
      cgroup: String(r.cgroup ?? ''),
      cpu: part('cpu', ['usageUsec', 'userUsec', 'systemUsec', 'nrPeriods', 'nrThrottled', 'throttledUsec']) as ContainerStats['cpu'],
      memory: part('memory', ['current', 'limit', 'peak', 'anon', 'file', 'swapCurrent', 'oomEvents', 'oomKillEvents']) as ContainerStats['memory'],
      pids: part('pids', ['current', 'limit']) as ContainerStats['pids'],
      io: part('io', ['readBytes', 'writeBytes', 'readIos', 'writeIos']) as ContainerStats['io'],
    };
  }

  async pauseContainer(containerId: string, opts: CallOptions = {}): Promise<void> {
    await this.call('pauseContainer', { containerId }, { rpc: 'PauseContainer', containerId }, opts);
  }

  async resumeContainer(containerId: string, opts: CallOptions = {}): Promise<void> {
    await this.call('resumeContainer', { containerId }, { rpc: 'ResumeContainer', containerId }, opts);
  }

  /**
   * Changes the cgroup limits of a created, running or paused container (`crun update`): an OCI
   * `linux.resources` object (LinuxResources), e.g. `{ memory: { limit: 33554432 }, pids: { limit: 64 } }`;
   * what it does not name stays as it is.
   */
  async updateContainer(containerId: string, resources: object, opts: CallOptions = {}): Promise<void> {
    const ctx = { rpc: 'UpdateContainer', containerId };
    await this.call('updateContainer', { containerId, resourcesJson: Buffer.from(JSON.stringify(resources)) }, ctx, opts);
  }

  /** Kills every process of the container, waits for them, and forgets it. */
  async deleteContainer(containerId: string, opts: CallOptions = {}): Promise<void> {
    await this.call('deleteContainer', { containerId }, { rpc: 'DeleteContainer', containerId }, opts);
  }

  /** Forgets an exited exec process. */
  async deleteProcess(containerId: string, execId: string, opts: CallOptions = {}): Promise<void> {
    await this.call('deleteProcess', { containerId, execId }, { rpc: 'DeleteProcess', containerId, execId }, opts);
  }

  // ---- stdio ----

  /** The process's stdin; end() closes it in the process once everything written is in. */
  async openStdin(containerId: string, execId = ''): Promise<Writable> {
    const ctx = { rpc: 'AttachStdin', containerId, execId };
    const { socket } = await openConnection(this.options.connect, { role: Role.Stdin, containerId, execId }, ctx, this.connectTimeoutMs);
    return new AgentInputStream(socket, ctx);
  }

  /** The process's stdout or stderr (a pty's output is its stdout). Ends at the process's EOF. */
  async openOutput(containerId: string, execId: string, which: 'stdout' | 'stderr'): Promise<Readable> {
    const ctx = { rpc: which === 'stdout' ? 'AttachStdout' : 'AttachStderr', containerId, execId };
    const role = which === 'stdout' ? Role.Stdout : Role.Stderr;
    const { socket, decoder, leftover } = await openConnection(this.options.connect, { role, containerId, execId }, ctx, this.connectTimeoutMs);
    return new AgentOutputStream(socket, decoder, leftover, ctx);
  }

  /** Opens the requested streams together (all or none). */
  async attachStdio(containerId: string, execId: string, which: StdioMode): Promise<ProcessStdio> {
    const opened = await Promise.allSettled([
      which.stdin ? this.openStdin(containerId, execId) : undefined,
      which.stdout ? this.openOutput(containerId, execId, 'stdout') : undefined,
      which.stderr && !which.terminal ? this.openOutput(containerId, execId, 'stderr') : undefined,
    ]);
    const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      for (const r of opened) if (r.status === 'fulfilled') r.value?.destroy();
      throw failed.reason;
    }
    const [stdin, stdout, stderr] = opened.map((r) => (r as PromiseFulfilledResult<unknown>).value);
    return { stdin: stdin as Writable | undefined, stdout: stdout as Readable | undefined, stderr: stderr as Readable | undefined };
  }

  // ---- port forwarding ----

  /**
   * A TCP connection to `port` on the guest's 127.0.0.1 (the pod's network namespace). Rejects
   * with NOT_FOUND when nothing listens there.
   */
  async openPort(port: number): Promise<Duplex> {
    const ctx = { rpc: `PortForward(${port})` };
    const { socket, decoder, leftover } = await openConnection(this.options.connect, { role: Role.Port, port }, ctx, this.connectTimeoutMs);
    return new AgentPortStream(socket, decoder, leftover, ctx);
  }

  // ---- plumbing ----

  private call(
    field: string,
    body: Record<string, unknown>,
    ctx: AgentErrorContext,
    opts: CallOptions,
  ): Promise<Record<string, unknown> | undefined> {
    if (this.closedBy !== undefined) return Promise.reject(new AgentConnectionError('UNAVAILABLE', this.closedBy, ctx));
    const id = this.nextId++;
    let payload: Uint8Array;
    try {
      payload = encodeMessage(agentTypes().Request, { id, [field]: body });
    } catch (err) {
      return Promise.reject(new AgentCallError('INVALID_ARGUMENT', `cannot encode the request: ${(err as Error).message}`, ctx));
    }
    return new Promise((resolve, reject) => {
      const entry: Pending = { resolve, reject, ctx, resultField: field };
      const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
      if (timeoutMs > 0) {
        entry.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new AgentTimeoutError('DEADLINE_EXCEEDED', `no answer within ${timeoutMs} ms`, ctx));
        }, timeoutMs);
      }
      this.pending.set(id, entry);
      this.options.logger?.debug('agent call', { id, ...ctx });
      this.socket.write(encodeFrame(FrameKind.Request, payload));
    });
  }

  private onChunk(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.shutdown(`malformed data from the agent: ${(err as Error).message}`);
      this.socket.destroy();
      return;
    }
    for (const frame of frames) this.onFrame(frame);
  }

  private onFrame(frame: Frame): void {
    if (frame.kind !== FrameKind.Response) {
      this.options.logger?.warn('agent sent an unexpected frame on the control connection', { kind: frame.kind });
      return;
    }
    let resp: { id: string; error: WireError | null } & Record<string, unknown>;
    try {
      resp = decodeMessage(agentTypes().Response, frame.payload);
    } catch (err) {
      this.options.logger?.warn('undecodable response from the agent', { error: (err as Error).message });
      return;
    }
    const id = Number(resp.id);
    const entry = this.pending.get(id);
    if (!entry) {
      // id 0: an error about a frame the agent could not attribute; otherwise a timed-out call.
      if (resp.error) this.options.logger?.warn('agent error without a pending call', { id, ...resp.error });
      return;
    }
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if (resp.error) {
      entry.reject(new AgentCallError(errorCodeName(resp.error.code) as AgentErrorCode, resp.error.message, entry.ctx));
    } else {
      entry.resolve((resp[entry.resultField] ?? undefined) as Record<string, unknown> | undefined);
    }
  }

  private shutdown(reason: string): void {
    if (this.closedBy !== undefined) return;
    this.closedBy = reason;
    for (const [id, entry] of this.pending) {
      this.pending.delete(id);
      clearTimeout(entry.timer);
      entry.reject(new AgentConnectionError('UNAVAILABLE', reason, entry.ctx));
    }
  }
}

function wireStdio(m: StdioMode): Record<string, boolean> {
  return { terminal: !!m.terminal, stdin: !!m.stdin, stdout: !!m.stdout, stderr: !!m.stderr };
}
