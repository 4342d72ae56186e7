// Property-based fuzzing (fast-check) of the ttrpc frame decoder and request envelope, the bytes
// containerd (or anything that reaches the shim's socket) sends. Run by scripts/fuzz.sh with
// STENCIL_FUZZ_JS_RUNS inputs per property (`make fuzz`; a short run in `make test`).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeRequest } from './envelope.js';
import { encodeFrame, FrameDecoder, HEADER_LENGTH } from './frame.js';

const numRuns = Number(process.env.STENCIL_FUZZ_JS_RUNS ?? 200);

/** `bytes` cut at the given points (sorted, deduplicated, inside the buffer). */
function cut(bytes: Buffer, points: number[]): Buffer[] {
  const at = [...new Set(points.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of [...at, bytes.length]) {
    chunks.push(bytes.subarray(from, p));
    from = p;
  }
  return chunks;
}

function decodeAll(chunks: Buffer[]) {
  const decoder = new FrameDecoder();
  const frames = chunks.flatMap((c) => decoder.push(c));
  return { frames, pending: decoder.pendingBytes };
}

const frameArb = fc.record({
  streamId: fc.nat({ max: 0xffffffff }),
  type: fc.nat({ max: 255 }),
  flags: fc.nat({ max: 255 }),
  data: fc.uint8Array({ maxLength: 600 }),
});

describe('ttrpc frames (property fuzzing)', () => {
  it('decodes any sequence of frames exactly, however the socket cuts it', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (frames, points) => {
        const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.streamId, f.type, f.data, f.flags)));
        const { frames: got, pending } = decodeAll(cut(bytes, points));
        assert.equal(pending, 0);
        assert.deepEqual(
          got.map((g) => (g.kind === 'frame' ? { streamId: g.streamId, type: g.type, flags: g.flags, data: new Uint8Array(g.data) } : g)),
          frames.map((f) => ({ ...f, data: new Uint8Array(f.data) })),
        );
      }),
      { numRuns },
    );
  });

  it('takes any bytes without throwing, and the result does not depend on how they were cut', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), (raw, points, bigLength) => {
        const bytes = Buffer.from(raw);
        // Now and then a header announcing more than the limit (an oversized frame to skip).
        if (bigLength && bytes.length >= HEADER_LENGTH) bytes.writeUInt32BE(0x7fffffff, 0);
        const whole = decodeAll([bytes]);
        const pieces = decodeAll(cut(bytes, points));
        assert.deepEqual(pieces, whole);
      }),
      { numRuns },
    );
  });

  it('decodes any request envelope or refuses it with an Error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (raw) => {
        try {
          decodeRequest(raw);
        } catch (err) {
          assert.ok(err instanceof Error, `threw a non-Error: ${String(err)}`);
        }
      }),
      { numRuns },
    );
  });
});
