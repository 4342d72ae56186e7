// Reassembly of length-prefixed frames from stream chunks, shared by the agent protocol
// (agent/framing.ts) and ttrpc (ttrpc/frame.ts): each frame is a fixed-size header holding the
// data length, then that many bytes of data. The protocols differ only in the header's size and
// fields, and in what they do with a frame longer than their limit.

export interface FrameFormat {
  headerLength: number;
  /** Frames announcing more data than this are reported as oversized, their data skipped. */
  maxDataLength: number;
  /** The data length a complete header announces. */
  dataLength(header: Buffer): number;
}

export type DecodedFrame =
  | { header: Buffer; data: Buffer; oversizedLength?: undefined }
  /** Reported once, as soon as its header is complete; its data is dropped as it arrives. */
  | { header: Buffer; data?: undefined; oversizedLength: number };

export class LengthPrefixedDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes of an oversized frame's data still to drop. */
  private skipping = 0;

  constructor(private readonly format: FrameFormat) {}

  /** The frames completed by `chunk` (possibly none), in order. */
  push(chunk: Buffer): DecodedFrame[] {
    const out: DecodedFrame[] = [];
    if (this.skipping) {
      const n = Math.min(this.skipping, chunk.length);
      this.skipping -= n;
      chunk = chunk.subarray(n);
    }
    if (chunk.length) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const { headerLength, maxDataLength } = this.format;
    while (!this.skipping && this.buffered >= headerLength) {
      const length = this.format.dataLength(this.peek(headerLength));
      if (length > maxDataLength) {
        const header = this.take(headerLength);
        this.skipping = length - this.drop(length);
        out.push({ header, oversizedLength: length });
        continue;
      }
      if (this.buffered < headerLength + length) break;
      const whole = this.take(headerLength + length);
      out.push({ header: whole.subarray(0, headerLength), data: whole.subarray(headerLength) });
    }
    return out;
  }

  /** Bytes received that are not part of a complete frame yet (skipped data not counted). */
  get pendingBytes(): number {
    return this.buffered;
  }

  /**
   * Hands over the bytes of the incomplete frame (another decoder goes on from them) and empties
   * this one. Refused in the middle of skipping an oversized frame, whose rest would be misread.
   */
  takePending(): Buffer {
    if (this.skipping) throw new Error(`the stream is inside an oversized frame (${this.skipping} bytes still to skip)`);
    const out = Buffer.concat(this.chunks);
    this.chunks = [];
    this.buffered = 0;
    return out;
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
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0];
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}
