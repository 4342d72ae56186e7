// ttrpc framing: every message on the socket is a 10-byte header (data length u32 BE, stream
// id u32 BE, message type u8, flags u8) followed by `length` bytes of data, at most 4 MiB.
export const HEADER_LENGTH = 10;
export const MAX_DATA_LENGTH = 4 << 20;

export const MessageType = {
  Request: 1,
  Response: 2,
  Data: 3,
} as const;

export interface Frame {
  kind: 'frame';
  streamId: number;
  type: number;
  flags: number;
  data: Buffer;
}

/** A frame whose announced length exceeds MAX_DATA_LENGTH: its data was skipped. */
export interface OversizedFrame {
  kind: 'oversized';
  streamId: number;
  type: number;
  flags: number;
  length: number;
}

export function encodeFrame(streamId: number, type: number, data: Uint8Array, flags = 0): Buffer {
  if (data.length > MAX_DATA_LENGTH) {
    throw new RangeError(`ttrpc frame data of ${data.length} bytes exceeds the limit of ${MAX_DATA_LENGTH} bytes`);
  }
  const frame = Buffer.allocUnsafe(HEADER_LENGTH + data.length);
  frame.writeUInt32BE(data.length, 0);
  frame.writeUInt32BE(streamId >>> 0, 4);
  frame.writeUInt8(type, 8);
  frame.writeUInt8(flags, 9);
  frame.set(data, HEADER_LENGTH);
  return frame;
}

/**
 * Reassembles frames from socket chunks of any size. An oversized frame is reported once (as
 * OversizedFrame, as soon as its header is complete) and its data is skipped as it arrives, so
 * the connection stays usable for the frames after it.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes of an oversized frame's data still to drop. */
  private skipping = 0;

  push(chunk: Buffer): Array<Frame | OversizedFrame> {
    const out: Array<Frame | OversizedFrame> = [];
    if (this.skipping) {
      const n = Math.min(this.skipping, chunk.length);
      this.skipping -= n;
      chunk = chunk.subarray(n);
    }
    if (chunk.length) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    while (!this.skipping && this.buffered >= HEADER_LENGTH) {
      const head = this.peek(HEADER_LENGTH);
      const length = head.readUInt32BE(0);
      const streamId = head.readUInt32BE(4);
      const type = head[8];
      const flags = head[9];
      if (length > MAX_DATA_LENGTH) {
        this.take(HEADER_LENGTH);
        this.skipping = length - this.drop(length);
        out.push({ kind: 'oversized', streamId, type, flags, length });
        continue;
      }
      if (this.buffered < HEADER_LENGTH + length) break;
      const whole = this.take(HEADER_LENGTH + length);
      out.push({ kind: 'frame', streamId, type, flags, data: whole.subarray(HEADER_LENGTH) });
    }
    return out;
  }

  /** Bytes received that are not part of a complete frame yet (skipped data not counted). */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  /** Discards up to n buffered bytes without copying; returns how many were discarded. */
  private drop(n: number): number {
    let dropped = 0;
    while (dropped < n && this.chunks.length) {
      const first = this.chunks[0];
      const k = Math.min(first.length, n - dropped);
      if (k === first.length) this.chunks.shift();
      else this.chunks[0] = first.subarray(k);
      dropped += k;
    }
    this.buffered -= dropped;
    return dropped;
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0];
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}
