import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { decodeMigrationStream, encodeMigrationStream, MIGRATION_STREAM_MAGIC, type MigrationStreamContent } from './migration-stream.js';

const content: MigrationStreamContent = {
  runState: 'paused',
  vm: { state: crypto.randomBytes(3000), config: '{\n  "format": "stencil-vm-config", "cmdline": "é"\n}\n' },
};

/** Re-seals a modified body with a valid checksum, to reach the checks behind it. */
function reseal(body: Buffer): Buffer {
  return Buffer.concat([body, crypto.createHash('sha256').update(body).digest()]);
}
const bodyOf = (stream: Buffer) => Buffer.from(stream.subarray(0, stream.length - 32));

describe('migration stream', () => {
  it('round-trips the run state, the VMM state and the config', () => {
    const stream = encodeMigrationStream(content);
    assert.ok(stream.subarray(0, 8).equals(MIGRATION_STREAM_MAGIC));
    const decoded = decodeMigrationStream(stream);
    assert.equal(decoded.runState, 'paused');
    assert.ok(decoded.vm.state.equals(content.vm.state));
    assert.equal(decoded.vm.config, content.vm.config);
    assert.equal(decodeMigrationStream(encodeMigrationStream({ ...content, runState: 'running' })).runState, 'running');
  });

  it('refuses a stream that is not one, of another version, truncated or corrupt', () => {
    const stream = encodeMigrationStream(content);
    assert.throws(() => decodeMigrationStream(Buffer.from('QEVM\x00\x00\x00\x03 a QEMU stream', 'latin1')), /not a Stencil migration stream \(bad magic\)/);
    assert.throws(() => decodeMigrationStream(Buffer.alloc(0)), /truncated: 0 bytes/);
    assert.throws(() => decodeMigrationStream(stream.subarray(0, 20)), /truncated: 20 bytes/);
    assert.throws(() => decodeMigrationStream(stream.subarray(0, stream.length - 1)), /checksum mismatch/);
    const flipped = Buffer.from(stream);
    flipped[500] ^= 1;
    assert.throws(() => decodeMigrationStream(flipped), /checksum mismatch \(the \d+-byte stream is corrupt or truncated\)/);
    const v2 = bodyOf(stream);
    v2.writeUInt32LE(2, 8);
    assert.throws(() => decodeMigrationStream(reseal(v2)), /format version 2, this Stencil reads version 1/);
  });

  it('refuses sections that are missing, repeated, unknown, overlong, or bytes after them', () => {
    const body = bodyOf(encodeMigrationStream(content));
    const fewer = Buffer.from(body);
    fewer.writeUInt32LE(2, 12);  // the count leaves vm-config out: its bytes are left over
    assert.throws(() => decodeMigrationStream(reseal(fewer)), /unexpected bytes after the last section/);
    const more = Buffer.from(body);
    more.writeUInt32LE(4, 12);
    assert.throws(() => decodeMigrationStream(reseal(more)), /truncated in section 3's name length/);
    const renamed = Buffer.from(body.toString('latin1').replace('vm-config', 'vm-zonfig'), 'latin1');
    assert.throws(() => decodeMigrationStream(reseal(renamed)), /unknown section 'vm-zonfig'/);
    const twice = Buffer.from(body.toString('latin1').replace('vm-config', 'run-state'), 'latin1');
    assert.throws(() => decodeMigrationStream(reseal(twice)), /section 'run-state' appears twice/);
    const overlong = Buffer.from(body);
    overlong.writeUInt32LE(1 << 30, 16 + 1 + 'run-state'.length);  // run-state's payload length
    assert.throws(() => decodeMigrationStream(reseal(overlong)), /truncated in section 'run-state' \(needs 1073741824 bytes/);
    const twoSections = Buffer.from(body.subarray(0, 16 + (1 + 9 + 4 + 6) + (1 + 8 + 4 + content.vm.state.length)));
    twoSections.writeUInt32LE(2, 12);
    assert.throws(() => decodeMigrationStream(reseal(twoSections)), /missing section 'vm-config'/);
    const badState = Buffer.from(body.toString('latin1').replace('paused', 'frozen'), 'latin1');
    assert.throws(() => decodeMigrationStream(reseal(badState)), /run state 'frozen' is neither running nor paused/);
  });
});
