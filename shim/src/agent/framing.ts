// The agent protocol's frame layer (proto/agent.proto): 4-byte big-endian payload length,
// 1-byte kind, payload.
import { type FrameFormat, LengthPrefixedDecoder } from '../util/frames.js';

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
  /** Lets go of a stdio stream without ending it (proto/agent.proto: DETACH). */
  Detach = 7,
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

const FORMAT: FrameFormat = { headerLength: FRAME_HEADER, maxDataLength: MAX_FRAME_PAYLOAD, dataLength: (head) => head.readUInt32BE(0) };

/** Reassembles frames from stream chunks of any size. */
export class FrameDecoder {
  private readonly frames = new LengthPrefixedDecoder(FORMAT);

  /** Frames completed by `chunk` (possibly none). Throws FrameError on an oversized frame. */
  push(chunk: Buffer): Frame[] {
    return this.frames.push(chunk).map(({ header, data, oversizedLength }) => {
      if (data === undefined) throw new FrameError(`frame length ${oversizedLength} exceeds the maximum ${MAX_FRAME_PAYLOAD}`);
      return { kind: header[4], payload: data };
    });
  }

  /** Bytes received that do not form a whole frame yet. */
  get pendingBytes(): number {
    return this.frames.pendingBytes;
  }
}

/** Feeds a chunk to `decoder` and hands on each frame it completes; a framing error goes to `fail`. */
export function forEachFrame(decoder: FrameDecoder, chunk: Buffer, onFrame: (frame: Frame) => void, fail: (message: string, cause: unknown) => void): void {
  let frames: Frame[];
  try {
    frames = decoder.push(chunk);
  } catch (err) {
    fail((err as Error).message, err);
    return;
  }
  for (const frame of frames) onFrame(frame);
}
