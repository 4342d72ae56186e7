// A TCP connection the agent opened to a port on the guest's 127.0.0.1, as a Node Duplex over its
// own agent connection (proto/agent.proto: PORT). end() half-closes towards the guest; the
// readable side ends at the guest's half-close. Backpressure is end to end, as for stdio. A
// connection lost without EOF (the guest side was reset, or the agent went away) destroys the
// stream with an error, which the caller passes on as a reset.
import type net from 'node:net';
import { Duplex } from 'node:stream';
import { AgentConnectionError, type AgentErrorContext } from './errors.js';
import { encodeFrame, type Frame, type FrameDecoder, FrameKind, forEachFrame } from './framing.js';
import { writeDataFrames } from './stdio.js';

export class AgentPortStream extends Duplex {
  private gotEof = false;
  private sentEof = false;

  /** `socket` is paused, past the hello; `leftover` are frames that arrived with the reply. */
  constructor(
    private readonly socket: net.Socket,
    decoder: FrameDecoder,
    leftover: Frame[],
    private readonly ctx: AgentErrorContext,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 });
    socket.on('data', (chunk: Buffer) => forEachFrame(decoder, chunk, (f) => this.onFrame(f), (m, cause) => this.fail(m, cause)));
    socket.on('error', (err) => this.fail(`${ctx.rpc} connection failed: ${err.message}`, err));
    socket.on('close', () => {
      if (!(this.gotEof && this.sentEof)) this.fail(`${ctx.rpc}: the guest's connection was reset`);
    });
    for (const frame of leftover) this.onFrame(frame);
  }

  override _read(): void {
    if (!this.gotEof) this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    writeDataFrames(this.socket, chunk, this.ctx, callback);
  }

  /** end(): an EOF frame, the guest socket's half-close after everything written before it. */
  override _final(callback: (error?: Error | null) => void): void {
    this.sentEof = true;
    this.socket.write(encodeFrame(FrameKind.Eof), (err) => {
      callback(err);
      this.closeIfDone();
    });
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(err);
  }

  private closeIfDone(): void {
    // Both halves are closed: nothing else comes or goes on this connection.
    if (this.gotEof && this.sentEof) this.socket.end();
  }

  private onFrame(frame: Frame): void {
    if (this.gotEof || this.destroyed) return;
    if (frame.kind === FrameKind.Data) {
      if (!this.push(frame.payload)) this.socket.pause();
    } else if (frame.kind === FrameKind.Eof) {
      this.gotEof = true;
      this.push(null);
      this.closeIfDone();
    }
  }

  private fail(detail: string, cause?: unknown): void {
    if (this.destroyed) return;
    this.destroy(new AgentConnectionError('UNAVAILABLE', detail, this.ctx, { cause }));
  }
}
