import assert from 'node:assert/strict';
import { it } from 'node:test';
import { encodeMessage, packAny } from './protos.js';
import { decodeRuntimeOptions } from './runtime-options.js';

// The inputs are encoded by protobufjs from containerd's .proto files, as containerd sends them.
it('decodes runtimeoptions.v1.Options from start stdin bytes or a decoded Any', () => {
  const inner = packAny('runtimeoptions.v1.Options', { typeUrl: 'io.stencil.Config', configPath: '/etc/stencil.toml', configBody: Buffer.from('x=1') });
  const stdin = encodeMessage('google.protobuf.Any', inner);
  const opts = decodeRuntimeOptions(stdin)!;
  assert.equal(opts.configPath, '/etc/stencil.toml');
  assert.equal(opts.typeUrl, 'io.stencil.Config');
  assert.equal(opts.configBody.toString(), 'x=1');
  assert.equal(decodeRuntimeOptions(inner)!.configPath, '/etc/stencil.toml');
  // A prefixed type URL, and unknown fields (a newer containerd's) are skipped.
  const prefixed = encodeMessage('google.protobuf.Any', { typeUrl: 'type.googleapis.com/runtimeoptions.v1.Options', value: Buffer.concat([Buffer.from(inner.value), Buffer.from([0x20, 0x05])]) });
  assert.equal(decodeRuntimeOptions(prefixed)!.configPath, '/etc/stencil.toml');
  assert.deepEqual(decodeRuntimeOptions(encodeMessage('google.protobuf.Any', packAny('runtimeoptions.v1.Options', {}))), { typeUrl: '', configPath: '', configBody: Buffer.alloc(0) });
});

it('has nothing for no options or another runtime\'s, and names undecodable bytes', () => {
  assert.equal(decodeRuntimeOptions(new Uint8Array()), undefined);
  assert.equal(decodeRuntimeOptions(null), undefined);
  assert.equal(decodeRuntimeOptions({ typeUrl: 'containerd.runc.v1.Options', value: Buffer.alloc(0) }), undefined);
  assert.throws(() => decodeRuntimeOptions(Buffer.from([0x0a, 0xff])), /runtime options: not a protobuf Any \(2 bytes\)/);
  assert.throws(() => decodeRuntimeOptions(Buffer.from([0x08, 0x01])), /not a protobuf Any .*field 1 has wire type 0/);
  assert.throws(() => decodeRuntimeOptions(Buffer.from([0x00])), /not a protobuf Any .*invalid field number 0/);
  assert.throws(
    () => decodeRuntimeOptions({ typeUrl: 'runtimeoptions.v1.Options', value: Buffer.from([0x12, 0x09, 0x61]) }),
    /runtime options: undecodable runtimeoptions.v1.Options: /,
  );
});
