import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, type Frame, FrameDecoder, HEADER_LENGTH, MAX_DATA_LENGTH, MessageType } from './frame.js';

describe('ttrpc frame codec', () => {
  it('encodes the 10-byte big-endian header', () => {
    const frame = encodeFrame(0x01020305, MessageType.Response, Buffer.from('abc'), 0x04);
    assert.deepEqual([...frame.subarray(0, HEADER_LENGTH)], [0, 0, 0, 3, 1, 2, 3, 5, 2, 4]);
    assert.equal(frame.subarray(HEADER_LENGTH).toString(), 'abc');
  });

  it('reassembles frames split into single bytes', () => {
    const wire = Buffer.concat([encodeFrame(1, MessageType.Request, Buffer.from('hello')), encodeFrame(3, MessageType.Request, Buffer.alloc(0))]);
    const decoder = new FrameDecoder();
    const frames = [];
    for (const byte of wire) frames.push(...decoder.push(Buffer.from([byte])));
    assert.equal(frames.length, 2);
    const [a, b] = frames as Frame[];
    assert.deepEqual([a.kind, a.streamId, a.type, a.data.toString()], ['frame', 1, MessageType.Request, 'hello']);
    assert.deepEqual([b.streamId, b.data.length], [3, 0]);
    assert.equal(decoder.pendingBytes, 0);
  });

  it('splits merged frames and keeps a partial tail for later', () => {
    const one = encodeFrame(1, 1, Buffer.from('one'));
    const two = encodeFrame(3, 1, Buffer.from('two'));
    const three = encodeFrame(5, 1, Buffer.from('three'));
    const decoder = new FrameDecoder();
    const first = decoder.push(Buffer.concat([one, two, three.subarray(0, 12)])) as Frame[];
    assert.deepEqual(first.map((f) => f.data.toString()), ['one', 'two']);
    assert.equal(decoder.pendingBytes, 12);
    const rest = decoder.push(three.subarray(12)) as Frame[];
    assert.deepEqual(rest.map((f) => [f.streamId, f.data.toString()]), [[5, 'three']]);
  });

  it('reports an oversized frame once, skips its data across chunks and goes on', () => {
    const length = MAX_DATA_LENGTH + 1;
    const header = Buffer.alloc(HEADER_LENGTH);
    header.writeUInt32BE(length, 0);
    header.writeUInt32BE(7, 4);
    header[8] = MessageType.Request;
    const decoder = new FrameDecoder();
    const reported = decoder.push(Buffer.concat([header, Buffer.alloc(1000)]));
    assert.deepEqual(reported, [{ kind: 'oversized', streamId: 7, type: MessageType.Request, flags: 0, length }]);
    assert.deepEqual(decoder.push(Buffer.alloc(length - 1000 - 5)), []);
    const next = encodeFrame(9, MessageType.Request, Buffer.from('after'));
    const frames = decoder.push(Buffer.concat([Buffer.alloc(5), next])) as Frame[];
    assert.deepEqual(frames.map((f) => [f.kind, f.streamId, f.data.toString()]), [['frame', 9, 'after']]);
    assert.equal(decoder.pendingBytes, 0);
  });

  it('accepts exactly 4 MiB and refuses to encode more', () => {
    const max = Buffer.alloc(MAX_DATA_LENGTH);
    const decoder = new FrameDecoder();
    const frames = decoder.push(encodeFrame(1, 1, max)) as Frame[];
    assert.equal(frames[0].kind, 'frame');
    assert.equal(frames[0].data.length, MAX_DATA_LENGTH);
    assert.throws(() => encodeFrame(1, 1, Buffer.alloc(MAX_DATA_LENGTH + 1)), /exceeds the limit of 4194304/);
  });
});
