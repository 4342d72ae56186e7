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

/** Why a handler's signal was aborted: the reason is an RpcError with one of these codes. */
const CLOSED_REASON = () => new RpcError(Code.Canceled, 'ttrpc: connection closed');

export class TtrpcServer {
  private readonly services = new Map<string, ServiceDefinition>();
  private readonly connections = new Set<ServerConnection>();
  private readonly servers = new Set<net.Server>();
  private readonly logger?: Logger;
  private closing = false;

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
  accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new ServerConnection(socket, this.services, this.logger);
    this.connections.add(conn);
    socket.once('close', () => this.connections.delete(conn));
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

class ServerConnection {
  private readonly decoder = new FrameDecoder();
  /** Calls in progress, by stream id. */
  private readonly active = new Map<number, AbortController>();
  private lastStreamId = 0;
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: net.Socket,
    private readonly services: Map<string, ServiceDefinition>,
    private readonly logger?: Logger,
  ) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      for (const item of this.decoder.push(chunk)) this.onFrame(item);
    });
    socket.on('error', (err) => this.logger?.debug('ttrpc connection error', { error: err.message }));
    socket.once('close', () => {
      for (const controller of this.active.values()) controller.abort(CLOSED_REASON());
      this.active.clear();
    });
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
    this.handle(id, frame.data);
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
    this.active.set(id, controller);
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
    if (this.socket.destroyed || !this.socket.writable) return;
    this.socket.write(encodeFrame(id, MessageType.Response, response));
  }
}
