// A process's stdio as Node streams, each over its own agent connection (proto/agent.proto).
// Backpressure is end to end: a paused output Readable stops reading its socket, so the agent
// stops reading the pipe and the process blocks; a stdin Writable completes writes only when
// the socket drains, i.e. when the agent has moved earlier data into the pipe.
import type net from 'node:net';
import { Readable, Writable } from 'node:stream';
import { AgentConnectionError, type AgentErrorContext } from './errors.js';
import { DATA_CHUNK, encodeFrame, type Frame, type FrameDecoder, FrameKind, forEachFrame } from './framing.js';

export class AgentOutputStream extends Readable {
  private gotEof = false;
  private detaching?: Promise<void>;
  private detached?: () => void;

  /** `socket` is paused, past the hello; `leftover` are frames that arrived with the reply. */
  constructor(
    private readonly socket: net.Socket,
    decoder: FrameDecoder,
    leftover: Frame[],
    private readonly ctx: AgentErrorContext,
  ) {
    super({ highWaterMark: 64 * 1024 });
    socket.on('data', (chunk: Buffer) => forEachFrame(decoder, chunk, (f) => this.onFrame(f), (m, cause) => this.fail(m, cause)));
    socket.on('error', (err) => this.fail(`${ctx.rpc} connection failed: ${err.message}`, err));
    socket.on('close', () => {
      if (!this.gotEof) this.fail(`${ctx.rpc} connection closed before EOF`);
    });
    for (const frame of leftover) this.onFrame(frame);
  }

  override _read(): void {
    if (!this.gotEof) this.socket.resume();
  }

  /**
   * Lets go of the process's output without ending it (a DETACH frame): this stream ends after
   * the last byte the agent read; what the process writes later waits in its pipe for the next
   * attach (from another shim daemon, after a pod migration).
   */
  detach(): Promise<void> {
    if (this.gotEof || this.destroyed) return Promise.resolve();
    this.detaching ??= new Promise<void>((resolve) => {
      this.detached = resolve;
      this.once('close', resolve);
      this.socket.write(encodeFrame(FrameKind.Detach));
      this.socket.resume();
    });
    return this.detaching;
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(err);
  }

  private onFrame(frame: Frame): void {
    if (this.gotEof || this.destroyed) return;
    if (frame.kind === FrameKind.Data) {
      if (!this.push(frame.payload)) this.socket.pause();
    } else if (frame.kind === FrameKind.Eof || (frame.kind === FrameKind.Detach && this.detached)) {
      this.gotEof = true;
      this.detached?.();
      this.push(null);
      // Nothing else comes or goes on this connection: close it both ways (not relying on the
      // transport to pass a half-close on).
      this.socket.destroy();
    }
  }

  private fail(detail: string, cause?: unknown): void {
    if (this.gotEof || this.destroyed) return;
    this.destroy(new AgentConnectionError('UNAVAILABLE', detail, this.ctx, { cause }));
  }
}

/**
 * Sends `chunk` as DATA frames; calls back once the socket has room again (so a Writable over it
 * completes writes only as fast as the agent takes them), or with an error if it closes first.
 */
export function writeDataFrames(socket: net.Socket, chunk: Buffer, ctx: AgentErrorContext, callback: (error?: Error | null) => void): void {
  let ok = true;
  for (let off = 0; off < chunk.length; off += DATA_CHUNK) {
    ok = socket.write(encodeFrame(FrameKind.Data, chunk.subarray(off, off + DATA_CHUNK)));
  }
  if (ok) {
    callback();
    return;
  }
  const done = (err?: Error) => {
    socket.off('drain', onDrain);
    socket.off('close', onClose);
    callback(err);
  };
  const onDrain = () => done();
  const onClose = () => done(new AgentConnectionError('UNAVAILABLE', `${ctx.rpc} connection closed`, ctx));
  socket.on('drain', onDrain);
  socket.on('close', onClose);
}

export class AgentInputStream extends Writable {
  private ending = false;

  constructor(
    private readonly socket: net.Socket,
    private readonly ctx: AgentErrorContext,
  ) {
    super({ highWaterMark: 64 * 1024 });
    socket.on('error', (err) => this.fail(`${ctx.rpc} connection failed: ${err.message}`, err));
    socket.on('close', () => {
      if (!this.ending) this.fail(`${ctx.rpc} connection closed by the agent`);
    });
    // Nothing more comes from the agent; keep reading so that a close is noticed.
    socket.on('data', () => {});
    socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    writeDataFrames(this.socket, chunk, this.ctx, callback);
  }

  /** Lets go of the process's stdin without closing it (a DETACH frame; what was written still goes in). */
  detach(): Promise<void> {
    if (this.destroyed || this.ending) return Promise.resolve();
    this.ending = true;
    return new Promise((resolve) =>
      this.socket.end(encodeFrame(FrameKind.Detach), () => {
        this.destroy();
        resolve();
      }),
    );
  }

  /** end(): an EOF frame, which closes the process's stdin once everything before it is in. */
  override _final(callback: (error?: Error | null) => void): void {
    this.ending = true;
    // Once the EOF frame is handed to the kernel, the connection has nothing more to carry.
    this.socket.end(encodeFrame(FrameKind.Eof), () => {
      this.socket.destroy();
      callback();
    });
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(err);
  }

  private fail(detail: string, cause?: unknown): void {
    if (this.destroyed) return;
    this.destroy(new AgentConnectionError('UNAVAILABLE', detail, this.ctx, { cause }));
  }
}
