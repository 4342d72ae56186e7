// The agent protocol's frame layer (proto/agent.proto): 4-byte big-endian payload length,
// 1-byte kind, payload.
export const FRAME_HEADER = 5;
export const MAX_FRAME_PAYLOAD = 4 * 2 ** 20;
/** Stdin data is sent in frames of at most this size. */
export const DATA_CHUNK = 64 * 1024;

export enum FrameKind {
  Hello = 1,
  HelloReply = 2,
  Request = 3,
  Response = 4,
  Data = 5,
  Eof = 6,
}

export interface Frame {
  kind: number;
  payload: Buffer;
}

export function encodeFrame(kind: FrameKind, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw new RangeError(`frame payload of ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  const frame = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.writeUInt8(kind, 4);
  frame.set(payload, FRAME_HEADER);
  return frame;
}

export class FrameError extends Error {
  override name = 'FrameError';
}

/** Reassembles frames from stream chunks of any size. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** Frames completed by `chunk` (possibly none). Throws FrameError on an oversized frame. */
  push(chunk: Buffer): Frame[] {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.buffered >= FRAME_HEADER) {
      const head = this.peek(FRAME_HEADER);
      const length = head.readUInt32BE(0);
      if (length > MAX_FRAME_PAYLOAD) throw new FrameError(`frame length ${length} exceeds the maximum ${MAX_FRAME_PAYLOAD}`);
      if (this.buffered < FRAME_HEADER + length) break;
      const whole = this.take(FRAME_HEADER + length);
      frames.push({ kind: whole[4], payload: whole.subarray(FRAME_HEADER) });
    }
    return frames;
  }

  /** Bytes received that do not form a whole frame yet. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  private take(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0];
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}
