// ttrpc framing: every message on the socket is a 10-byte header (data length u32 BE, stream
// id u32 BE, message type u8, flags u8) followed by `length` bytes of data, at most 4 MiB.
import { type FrameFormat, LengthPrefixedDecoder } from '../util/frames.js';

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

const FORMAT: FrameFormat = { headerLength: HEADER_LENGTH, maxDataLength: MAX_DATA_LENGTH, dataLength: (head) => head.readUInt32BE(0) };

/**
 * Reassembles frames from socket chunks of any size. An oversized frame is reported once (as
 * OversizedFrame, as soon as its header is complete) and its data is skipped as it arrives, so
 * the connection stays usable for the frames after it.
 */
export class FrameDecoder {
  private readonly frames = new LengthPrefixedDecoder(FORMAT);

  push(chunk: Buffer): Array<Frame | OversizedFrame> {
    return this.frames.push(chunk).map(({ header, data, oversizedLength }) => {
      const fields = { streamId: header.readUInt32BE(4), type: header[8], flags: header[9] };
      return data === undefined ? { kind: 'oversized', ...fields, length: oversizedLength } : { kind: 'frame', ...fields, data };
    });
  }

  /** Bytes received that are not part of a complete frame yet (skipped data not counted). */
  get pendingBytes(): number {
    return this.frames.pendingBytes;
  }

  /** The incomplete frame's bytes, for another decoder to go on from (LengthPrefixedDecoder.takePending). */
  takePending(): Buffer {
    return this.frames.takePending();
  }
}
