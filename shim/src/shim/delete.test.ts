import assert from 'node:assert/strict';
import { it } from 'node:test';
import { decodeMessage, timestampToDate } from '../containerd/protos.js';
import { encodeDeleteResponse } from './delete.js';

it('encodes the delete subcommand\'s DeleteResponse as containerd decodes it', () => {
  const exitedAt = new Date('2026-11-22T07:43:04.546Z');
  const bytes = encodeDeleteResponse({ pid: 4242, exitStatus: 137, exitedAt });
  const decoded = decodeMessage<{ pid: number; exitStatus: number; exitedAt: { seconds: number; nanos: number } }>('containerd.task.v2.DeleteResponse', bytes);
  assert.equal(decoded.pid, 4242);
  assert.equal(decoded.exitStatus, 137);
  assert.equal(timestampToDate(decoded.exitedAt).getTime(), exitedAt.getTime());
});
