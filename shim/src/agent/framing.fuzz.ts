// Property-based fuzzing (fast-check) of the agent frame decoder the shim runs on what comes back
// from the guest (a hostile guest's agent may send anything). Run by scripts/fuzz.sh with
// STENCIL_FUZZ_JS_RUNS inputs per property.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeFrame, FrameDecoder, FrameError, FRAME_HEADER } from './framing.js';

const numRuns = Number(process.env.STENCIL_FUZZ_JS_RUNS ?? 200);

function decodeCut(bytes: Buffer, points: number[]): { frames: Array<{ kind: number; payload: Buffer }>; pending: number; error?: string } {
  const at = [...new Set(points.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b);
  const decoder = new FrameDecoder();
  const frames = [];
  let from = 0;
  try {
    for (const p of [...at, bytes.length]) {
      frames.push(...decoder.push(bytes.subarray(from, p)));
      from = p;
    }
  } catch (err) {
    assert.ok(err instanceof FrameError, `threw something other than a FrameError: ${String(err)}`);
    return { frames, pending: -1, error: (err as Error).message };
  }
  return { frames, pending: decoder.pendingBytes };
}

describe('agent frames (property fuzzing)', () => {
  it('decodes any sequence of frames exactly, however the socket cuts it', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ kind: fc.nat({ max: 255 }), payload: fc.uint8Array({ maxLength: 600 }) }), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (frames, points) => {
          const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.kind, f.payload)));
          const got = decodeCut(bytes, points);
          assert.equal(got.pending, 0);
          assert.deepEqual(
            got.frames.map((f) => ({ kind: f.kind, payload: new Uint8Array(f.payload) })),
            frames.map((f) => ({ kind: f.kind, payload: new Uint8Array(f.payload) })),
          );
        },
      ),
      { numRuns },
    );
  });

  it('takes any bytes: frames, or a FrameError for an oversized length, the same however they were cut', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), (raw, points, bigLength) => {
        const bytes = Buffer.from(raw);
        if (bigLength && bytes.length >= FRAME_HEADER) bytes.writeUInt32BE(0x7fffffff, 0);
        const whole = decodeCut(bytes, []);
        const pieces = decodeCut(bytes, points);
        // Cut or whole, the same frames come out before the same error (if any).
        assert.deepEqual(pieces.frames, whole.frames);
        assert.equal(pieces.error, whole.error);
        if (!whole.error) assert.equal(pieces.pending, whole.pending);
      }),
      { numRuns },
    );
  });
});
