import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LengthPrefixedDecoder } from './frames.js';

// A format unlike both protocols: a 3-byte header (u16 LE length, 1 tag byte), at most 4 bytes of data.
const format = { headerLength: 3, maxDataLength: 4, dataLength: (head: Buffer) => head.readUInt16LE(0) };
const frame = (tag: number, data: string) => {
  const head = Buffer.alloc(3);
  head.writeUInt16LE(Buffer.byteLength(data), 0);
  head[2] = tag;
  return Buffer.concat([head, Buffer.from(data)]);
};
const summary = (frames: ReturnType<LengthPrefixedDecoder['push']>) =>
  frames.map((f) => (f.data ? `${f.header[2]}:${f.data.toString()}` : `${f.header[2]}:oversized ${f.oversizedLength}`));

describe('length-prefixed frame decoder', () => {
  it('reassembles frames fed one byte at a time, including empty ones', () => {
    const stream = Buffer.concat([frame(1, 'abcd'), frame(2, ''), frame(3, 'x')]);
    const decoder = new LengthPrefixedDecoder(format);
    const got = [];
    for (const byte of stream) got.push(...summary(decoder.push(Buffer.from([byte]))));
    assert.deepEqual(got, ['1:abcd', '2:', '3:x']);
    assert.equal(decoder.pendingBytes, 0);
  });

  it('reports an oversized frame once and skips its data across chunks', () => {
    const big = frame(7, 'too long!');
    const stream = Buffer.concat([big, frame(8, 'ok')]);
    const decoder = new LengthPrefixedDecoder(format);
    assert.deepEqual(summary(decoder.push(stream.subarray(0, 5))), ['7:oversized 9']);
    assert.deepEqual(summary(decoder.push(stream.subarray(5, 10))), []);
    assert.deepEqual(summary(decoder.push(stream.subarray(10))), ['8:ok']);
  });
});
