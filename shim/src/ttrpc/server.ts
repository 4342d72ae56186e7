// TtrpcServer: serves ServiceDefinitions (rpc/service.ts) over ttrpc on a Unix socket, the
// protocol containerd speaks to shims. Any number of connections; the requests of one
// connection run concurrently and are answered as each finishes (a blocking Wait does not hold
// up other calls). Protocol rules follow containerd's ttrpc server: client stream ids are odd
// and increasing (others are answered INVALID_ARGUMENT), an oversized frame is answered
// RESOURCE_EXHAUSTED on its stream, an unknown service or method UNIMPLEMENTED ("service X" /
// "method X"), an undecodable payload INTERNAL; handler errors map through toRpcError. A
// request's timeout_nano aborts the handler's signal and answers DEADLINE_EXCEEDED.
// Unlike Go's server, peer credentials (SO_PEERCRED) are not checked: the socket's 0600 mode
// and directory are the access control.
// A pod migration hands the server's connections to another process (quiesce, takeConnections,
// adopt): reading
// stops, calls in progress finish, and the requests left unanswered (containerd's Wait) go along
// to be run again there, so containerd's connection and its pending calls survive the move.
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from '../util/log.js';
import { type CallContext, invokeMethod, type ServiceDefinition } from '../rpc/service.js';
import { decodeRequest, encodeErrorResponse, encodeOkResponse, metadataRecord } from './envelope.js';
import { Code, RpcError, toRpcError } from '../rpc/errors.js';
import { encodeFrame, type Frame, FrameDecoder, MAX_DATA_LENGTH, MessageType, type OversizedFrame } from './frame.js';

export interface TtrpcServerOptions {
  logger?: Logger;
}

/** What another process needs to serve a connection on (TtrpcServer.takeConnections, TtrpcServer.adopt). */
export interface ConnectionHandover {
  /** The last stream id the client used: the next must be larger. */
  lastStreamId: number;
  /** Requests read and not answered, in order: frame data, base64 (the state travels as JSON). */
  requests: Array<{ streamId: number; data: string }>;
  /** Bytes of a request not complete yet, base64. */
  unread: string;
}

export interface HandOverOptions {
  /** Calls that may stay unanswered: their requests go along (containerd's Wait). */
  parked(service: string, method: string): boolean;
  /** Calls whose connection stays here (the call asking for the hand-over). */
  stays(service: string, method: string): boolean;
  /** How long the other calls in progress may take to finish. */
  timeoutMs: number;
}

/** Why a handler's signal was aborted: the reason is an RpcError with one of these codes. */
const CLOSED_REASON = () => new RpcError(Code.Canceled, 'ttrpc: connection closed');

export class TtrpcServer {
  private readonly services = new Map<string, ServiceDefinition>();
  private readonly connections = new Set<ServerConnection>();
  private readonly servers = new Set<net.Server>();
  private readonly logger?: Logger;
  private closing = false;
  private handingOver = false;

  constructor(options: TtrpcServerOptions = {}) {
    this.logger = options.logger;
  }

  /** Registers a service; calls name it by `def.name`. Re-adding a name replaces it. */
  addService(def: ServiceDefinition): void {
    this.services.set(def.name, def);
  }

  /** Listens on the Unix socket `path` (created by listen; mode 0600). Fails if it is in use. */
  async listen(path: string): Promise<net.Server> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`ttrpc: cannot listen on ${path}: ${err.message}`, { cause: err }));
      server.once('error', onError);
      server.listen(path, () => {
        server.off('error', onError);
        resolve();
      });
    });
    try {
      fs.chmodSync(path, 0o600);
    } catch (err) {
      server.close();
      throw new Error(`ttrpc: cannot restrict ${path} to its owner: ${(err as Error).message}`, { cause: err });
    }
    this.serve(server);
    return server;
  }

  /** Serves connections accepted by an existing net.Server (listening already or later). */
  serve(server: net.Server): void {
    this.servers.add(server);
    server.on('connection', (socket) => this.accept(socket));
    server.on('error', (err) => this.logger?.error('ttrpc server socket error', { error: err.message }));
  }

  /** Serves one already-connected socket (also used by tests). */
  accept(socket: net.Socket, handedOver?: ConnectionHandover): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new ServerConnection(socket, this.services, this.logger, this.handingOver);
    this.connections.add(conn);
    socket.once('close', () => this.connections.delete(conn));
    if (handedOver) conn.resumeFrom(handedOver);
  }

  /** Serves a connection another process handed over (its socket and takeConnections' state for it). */
  adopt(socket: net.Socket, state: ConnectionHandover): void {
    this.accept(socket, state);
  }

  /**
   * First step of handing the connections to another process: reading stops (also on
   * connections accepted from now on) and the calls in progress finish, except those that may
   * stay unanswered (`parked`). Connections with a call that `stays` are served on. On a
   * timeout everything is served again and this throws.
   */
  async quiesce(options: HandOverOptions): Promise<void> {
    this.handingOver = true;
    for (const c of this.connections) if (!c.hasCall(options.stays)) c.stopReading();
    // Data already read reaches the decoders on the next turn of the event loop.
    await new Promise((resolve) => setImmediate(resolve));
    for (const deadline = Date.now() + options.timeoutMs; ; await new Promise((resolve) => setTimeout(resolve, 20))) {
      const busy = [...this.connections].find((c) => !c.hasCall(options.stays) && c.hasCall((s, m) => !options.parked(s, m)));
      if (!busy) return;
      if (Date.now() > deadline) {
        this.resumeServing();
        throw new Error(`ttrpc: calls still in progress after ${options.timeoutMs} ms: ${busy.describeCalls()}`);
      }
    }
  }

  /**
   * Second step (after quiesce): the connections and their states, no longer served here; their
   * sockets are the caller's to pass on. Calls still waiting here are dropped unanswered: their
   * requests are in the state, to be run again by whoever adopts it.
   */
  takeConnections(options: Pick<HandOverOptions, 'stays'>): Array<{ socket: net.Socket; state: ConnectionHandover }> {
    const moving = [...this.connections].filter((c) => !c.hasCall(options.stays));
    const states = moving.map((c) => ({ conn: c, state: c.handoverState() }));
    return states.map(({ conn, state }) => {
      this.connections.delete(conn);
      return { socket: conn.detach(), state };
    });
  }

  /** After a failed hand-over: read and answer again. */
  resumeServing(): void {
    this.handingOver = false;
    for (const c of this.connections) c.resumeReading();
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Stops listening and closes every connection: answers already queued are flushed, handlers
   * still running get their signal aborted (CANCELLED) and their answers are dropped.
   */
  async close(): Promise<void> {
    this.closing = true;
    const closed = [...this.servers].map(
      (server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())),
    );
    this.servers.clear();
    for (const conn of this.connections) conn.close();
    await Promise.all([...closed, ...[...this.connections].map((c) => c.closed)]);
  }
}

interface ActiveCall {
  controller: AbortController;
  service: string;
  method: string;
  data: Buffer;
}

/** libuv's handle of a net.Socket: reading stops and starts there, whatever the stream's mode. */
type SocketHandle = { readStop(): number; readStart(): number };
const handleOf = (socket: net.Socket) => (socket as unknown as { _handle?: SocketHandle | null })._handle ?? undefined;

class ServerConnection {
  private readonly decoder = new FrameDecoder();
  /** Calls in progress, by stream id. */
  private readonly active = new Map<number, ActiveCall>();
  /** Requests read while reading stops for a hand-over: they go along unanswered. */
  private readonly held: Array<{ streamId: number; data: Buffer }> = [];
  private holding = false;
  private detached = false;
  private lastStreamId = 0;
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: net.Socket,
    private readonly services: Map<string, ServiceDefinition>,
    private readonly logger?: Logger,
    handingOver = false,
  ) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      for (const item of this.decoder.push(chunk)) this.onFrame(item);
    });
    socket.on('error', (err) => this.logger?.debug('ttrpc connection error', { error: err.message }));
    socket.once('close', () => {
      if (this.detached) return;  // its calls live on in the process that took it
      for (const call of this.active.values()) call.controller.abort(CLOSED_REASON());
      this.active.clear();
    });
    if (handingOver) this.stopReading();
  }

  hasCall(match: (service: string, method: string) => boolean): boolean {
    return [...this.active.values()].some((c) => match(c.service, c.method));
  }

  describeCalls(): string {
    return [...this.active.values()].map((c) => `${c.service}/${c.method}`).join(', ');
  }

  stopReading(): void {
    this.holding = true;
    handleOf(this.socket)?.readStop();
  }

  resumeReading(): void {
    this.holding = false;
    for (const { streamId, data } of this.held.splice(0)) this.handle(streamId, data);
    handleOf(this.socket)?.readStart();
  }

  /** Goes on from another process's hand-over: its unanswered requests run here now. */
  resumeFrom(state: ConnectionHandover): void {
    this.lastStreamId = state.lastStreamId;
    handleOf(this.socket)?.readStart();  // in case whoever passed the socket had stopped it
    if (state.unread) for (const item of this.decoder.push(Buffer.from(state.unread, 'base64'))) this.onFrame(item);
    for (const r of state.requests) this.handle(r.streamId, Buffer.from(r.data, 'base64'));
  }

  /** No longer served here (after handoverState): calls still waiting are dropped unanswered. */
  detach(): net.Socket {
    this.detached = true;
    for (const call of this.active.values()) call.controller.abort(CLOSED_REASON());
    this.active.clear();
    return this.socket;
  }

  handoverState(): ConnectionHandover {
    const parked = [...this.active.entries()].map(([streamId, c]) => ({ streamId, data: c.data }));
    const requests = [...parked, ...this.held.splice(0)].sort((a, b) => a.streamId - b.streamId);
    return {
      lastStreamId: this.lastStreamId,
      requests: requests.map((r) => ({ streamId: r.streamId, data: r.data.toString('base64') })),
      unread: this.decoder.takePending().toString('base64'),
    };
  }

  close(): void {
    if (this.socket.destroyed) return;
    this.socket.end();
    // A peer that does not close its side must not keep the connection (and close()) alive.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private onFrame(frame: Frame | OversizedFrame): void {
    const id = frame.streamId;
    if (id % 2 !== 1) {
      this.reply(id, encodeErrorResponse(Code.InvalidArgument, `stream id ${id} must be odd for client-initiated streams`));
      return;
    }
    if (frame.kind === 'oversized') {
      this.reply(id, encodeErrorResponse(Code.ResourceExhausted, `message length ${frame.length} exceeds the maximum message size of ${MAX_DATA_LENGTH}`));
      if (id > this.lastStreamId) this.lastStreamId = id;
      return;
    }
    if (frame.type !== MessageType.Request) {
      // Streaming (data frames) is not used by containerd's task and event APIs.
      this.logger?.debug('ttrpc: ignoring a non-request frame', { streamId: id, type: frame.type });
      return;
    }
    if (id <= this.lastStreamId) {
      this.reply(id, encodeErrorResponse(Code.InvalidArgument, `stream id ${id} cannot be reused (last was ${this.lastStreamId}); ids must increase`));
      return;
    }
    this.lastStreamId = id;
    if (this.holding) this.held.push({ streamId: id, data: frame.data });
    else this.handle(id, frame.data);
  }

  private handle(id: number, data: Buffer): void {
    let request;
    try {
      request = decodeRequest(data);
    } catch (err) {
      this.reply(id, encodeErrorResponse(Code.InvalidArgument, `undecodable ttrpc request: ${(err as Error).message}`));
      return;
    }
    const service = this.services.get(request.service);
    if (!service) {
      this.reply(id, encodeErrorResponse(Code.Unimplemented, `service ${request.service}`));
      return;
    }
    const controller = new AbortController();
    this.active.set(id, { controller, service: request.service, method: request.method, data });
    let timer: NodeJS.Timeout | undefined;
    if (request.timeoutNano > 0) {
      const ms = Math.max(1, Math.ceil(request.timeoutNano / 1e6));
      timer = setTimeout(() => {
        if (!this.active.delete(id)) return;
        const reason = new RpcError(Code.DeadlineExceeded, `${request.service}/${request.method}: deadline of ${ms} ms exceeded`);
        controller.abort(reason);
        this.reply(id, encodeErrorResponse(reason.code, reason.message));
      }, ms);
    }
    const ctx: CallContext = {
      service: request.service,
      method: request.method,
      metadata: metadataRecord(request.metadata),
      signal: controller.signal,
    };
    invokeMethod(service, request.method, request.payload, ctx).then(
      (payload) => {
        const response = encodeOkResponse(payload);
        if (response.length <= MAX_DATA_LENGTH) return this.finish(id, timer, response);
        const message = `${request.service}/${request.method}: response of ${payload.length} bytes exceeds the maximum message size of ${MAX_DATA_LENGTH}`;
        this.logger?.error('ttrpc response too large', { streamId: id, error: message });
        this.finish(id, timer, encodeErrorResponse(Code.ResourceExhausted, message));
      },
      (error: unknown) => {
        const err = toRpcError(error);
        if (err.code === Code.Unknown || err.code === Code.Internal) {
          this.logger?.debug('ttrpc call failed', { service: request.service, method: request.method, code: err.codeName, error: err.message });
        }
        this.finish(id, timer, encodeErrorResponse(err.code, err.message));
      },
    );
  }

  private finish(id: number, timer: NodeJS.Timeout | undefined, response: Uint8Array): void {
    clearTimeout(timer);
    // Gone: answered DEADLINE_EXCEEDED already, or the connection closed.
    if (!this.active.delete(id)) return;
    this.reply(id, response);
  }

  private reply(id: number, response: Uint8Array): void {
    if (this.detached || this.socket.destroyed || !this.socket.writable) return;
    this.socket.write(encodeFrame(id, MessageType.Response, response));
  }
}
