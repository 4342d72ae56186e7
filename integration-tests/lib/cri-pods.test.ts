import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseCriLog } from './cri-pods.js';

test('parseCriLog: full and partial lines of both streams; a malformed line throws', () => {
  const text = '2026-12-02T16:00:00.123456789Z stdout F hello world\n2026-12-02T16:00:00.2+00:00 stderr P part \n2026-12-02T16:00:00.3Z stderr F \n';
  assert.deepEqual(parseCriLog(text), [
    { time: '2026-12-02T16:00:00.123456789Z', stream: 'stdout', tag: 'F', text: 'hello world' },
    { time: '2026-12-02T16:00:00.2+00:00', stream: 'stderr', tag: 'P', text: 'part ' },
    { time: '2026-12-02T16:00:00.3Z', stream: 'stderr', tag: 'F', text: '' },
  ]);
  assert.throws(() => parseCriLog('hello\n'), /not a CRI log line/);
  assert.throws(() => parseCriLog('2026-12-02T16:00:00Z stdin F x\n'), /not a CRI log line/);
});
