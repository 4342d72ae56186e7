// TtrpcClient: calls ttrpc services over a Unix socket (containerd's events service from the
// shim; the shim's own services in tests). Calls are concurrent on one connection (odd stream
// ids 1, 3, 5, ...) and are matched to their responses by stream id. When the connection
// closes, every pending call fails with RpcClosedError.
import net from 'node:net';
import type protobuf from 'protobufjs';
import { DECODE_OPTIONS } from '../rpc/service.js';
import { prepareForEncoding } from '../util/proto.js';
import { decodeResponse, encodeRequest, metadataPairs } from './envelope.js';
import { Code, RpcClosedError, RpcError } from '../rpc/errors.js';
import { encodeFrame, FrameDecoder, MAX_DATA_LENGTH, MessageType } from './frame.js';

export interface TtrpcCallOptions {
  metadata?: Record<string, string>;
  /** Deadline sent to the server (timeout_nano) and enforced locally; 0/undefined = none. */
  timeoutMs?: number;
  /** Abandons the call (rejects with CANCELLED); the server is not told. */
  signal?: AbortSignal;
}

export interface TtrpcConnectOptions {
  /** Gives up connecting after this long (default 10 s). */
  timeoutMs?: number;
}

interface Pending {
  resolve: (payload: Buffer) => void;
  reject: (err: Error) => void;
}

export class TtrpcClient {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private nextStreamId = 1;
  private closeError?: RpcClosedError;
  /** Resolves when the connection has closed (for any reason). */
  readonly closed: Promise<void>;

  /** Connects to the ttrpc server listening on the Unix socket `path` (no "unix://" prefix). */
  static connect(path: string, options: TtrpcConnectOptions = {}): Promise<TtrpcClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new RpcClosedError(`ttrpc: connecting to ${path} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new RpcClosedError(`ttrpc: cannot connect to ${path}: ${err.message}`, { cause: err }));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new TtrpcClient(socket, path));
      });
    });
  }

  constructor(
    private readonly socket: net.Socket,
    /** Names the peer in error messages. */
    readonly address = 'ttrpc server',
  ) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(`ttrpc: connection to ${this.address} failed: ${err.message}`));
    socket.once('close', () => this.fail(`ttrpc: connection to ${this.address} closed`));
  }

  get isClosed(): boolean {
    return this.closeError !== undefined;
  }

  /** Calls `service`/`method` with an encoded request; resolves with the encoded response. */
  call(service: string, method: string, request: Uint8Array, options: TtrpcCallOptions = {}): Promise<Buffer> {
    if (this.closeError) return Promise.reject(this.closeError);
    const timeoutMs = options.timeoutMs ?? 0;
    const data = encodeRequest({
      service,
      method,
      payload: Buffer.from(request.buffer, request.byteOffset, request.byteLength),
      timeoutNano: timeoutMs > 0 ? timeoutMs * 1e6 : 0,
      metadata: metadataPairs(options.metadata),
    });
    if (data.length > MAX_DATA_LENGTH) {
      return Promise.reject(new RpcError(Code.ResourceExhausted, `${service}/${method}: request of ${data.length} bytes exceeds the maximum message size of ${MAX_DATA_LENGTH}`));
    }
    if (options.signal?.aborted) return Promise.reject(new RpcError(Code.Canceled, `${service}/${method}: cancelled`));
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    if (this.nextStreamId > 0xffffffff) {
      // Stream ids must increase; a connection that ran out of them has to be replaced.
      this.fail(`ttrpc: connection to ${this.address} ran out of stream ids`);
      this.socket.destroy();
    }
    return new Promise<Buffer>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => settle(new RpcError(Code.Canceled, `${service}/${method}: cancelled`));
      const settle = (err: Error | null, payload?: Buffer) => {
        if (!this.pending.delete(id)) return;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(payload!);
      };
      this.pending.set(id, {
        resolve: (payload) => settle(null, payload),
        reject: (err) => settle(err),
      });
      if (timeoutMs > 0) {
        timer = setTimeout(() => settle(new RpcError(Code.DeadlineExceeded, `${service}/${method}: no answer within ${timeoutMs} ms`)), timeoutMs);
      }
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.socket.write(encodeFrame(id, MessageType.Request, data));
    });
  }

  /** call() with protobufjs types: encodes `request` (Dates allowed in Timestamps), decodes the answer. */
  async invoke<T = Record<string, unknown>>(
    service: string,
    method: string,
    requestType: protobuf.Type,
    request: object,
    responseType: protobuf.Type,
    options?: TtrpcCallOptions,
  ): Promise<T> {
    const bytes = requestType.encode(requestType.fromObject(prepareForEncoding(request) as Record<string, unknown>)).finish();
    const answer = await this.call(service, method, bytes, options);
    return responseType.toObject(responseType.decode(answer), DECODE_OPTIONS) as T;
  }

  /** Closes the connection; pending calls fail with RpcClosedError. */
  close(): Promise<void> {
    this.fail(`ttrpc: client of ${this.address} closed`);
    this.socket.destroy();
    return this.closed;
  }

  private onData(chunk: Buffer): void {
    for (const item of this.decoder.push(chunk)) {
      const pending = this.pending.get(item.streamId);
      if (!pending) continue; // an answer to a call given up on (timeout, abort)
      if (item.kind === 'oversized') {
        pending.reject(new RpcError(Code.ResourceExhausted, `ttrpc: response of ${item.length} bytes exceeds the maximum message size of ${MAX_DATA_LENGTH}`));
        continue;
      }
      if (item.type !== MessageType.Response) {
        pending.reject(new RpcError(Code.Internal, `ttrpc: unexpected frame type ${item.type} on stream ${item.streamId} (streaming is not supported)`));
        continue;
      }
      let response;
      try {
        response = decodeResponse(item.data);
      } catch (err) {
        pending.reject(new RpcError(Code.Internal, `ttrpc: undecodable response on stream ${item.streamId}: ${(err as Error).message}`));
        continue;
      }
      if (response.status && response.status.code !== Code.OK) pending.reject(new RpcError(response.status.code, response.status.message));
      else pending.resolve(response.payload);
    }
  }

  private fail(message: string): void {
    this.closeError ??= new RpcClosedError(message);
    // Each reject removes its call from `pending`.
    for (const call of [...this.pending.values()]) call.reject(this.closeError);
  }
}
