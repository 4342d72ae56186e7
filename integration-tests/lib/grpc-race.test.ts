// lostGrpcRace on containerd 2.1.9 logs and ctr errors recorded on the build machine (2026-12-02) and in the emulated host (2026-12-07):
// the four lost-race endings are recognized; other failures, or another shim's cleanup, are not.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type CtrAttempt, lostGrpcRace } from './grpc-race.js';

const bundle = '/tmp/stencil-ctd-kR440c/state/io.containerd.runtime.v2.task/stencil-cab40104/g1';
const ns = 'namespace=stencil-cab40104';
const raceLog = [
  `time="2026-12-02T05:15:25.069603770Z" level=info msg="connecting to shim g1" address=/run/containerd/s/d80d ${ns} protocol=grpc version=3`,
  `time="2026-12-02T05:15:25.070403575Z" level=info msg="shim disconnected" id=g1 ${ns}`,
  `time="2026-12-02T05:15:25.070483513Z" level=info msg="cleaning up after shim disconnected" id=g1 ${ns}`,
  `time="2026-12-02T05:15:25.070491896Z" level=info msg="cleaning up dead shim" id=g1 ${ns}`,
  `time="2026-12-02T05:15:25.327849877Z" level=error msg="copy shim log" error="read /proc/self/fd/11: file already closed" ${ns}`,
].join('\n');
const bundleGone = `ctr: failed to create shim task: cannot read the OCI spec ${bundle}/config.json: ENOENT: no such file or directory, open '${bundle}/config.json'\n`;
const shimGone = 'ctr: failed to create shim task: connection error: desc = "error reading server preface: connection reset by peer"\n';
const clientClosed =
  'ctr: failed to create shim task: connection error: desc = "error reading server preface: raw-read unix @->/run/containerd/s/27d205cb58ba59651ac7de9d7f5e89094db616e1a87272aed03c64b2217d7c30: use of closed network connection"\n';
const attempt = (o: Partial<CtrAttempt>): CtrAttempt => ({ id: 'g1', bundle, code: 1, stderr: bundleGone, log: raceLog, ...o });

describe('lostGrpcRace', () => {
  it('recognizes the four endings of a lost race', () => {
    assert.match(lostGrpcRace(attempt({}))!, /after containerd had removed the bundle/);
    assert.match(lostGrpcRace(attempt({ stderr: shimGone }))!, /stopped the shim before it answered/);
    assert.match(lostGrpcRace(attempt({ stderr: clientClosed }))!, /closed its connection to the shim/);
    assert.match(lostGrpcRace(attempt({ stderr: 'ctr: task g1 not found\n' }))!, /dropped the shim by the time ctr went on from Create/);
  });

  it('does not take other failures for the race', () => {
    assert.equal(lostGrpcRace(attempt({ code: 0 })), undefined);
    assert.equal(lostGrpcRace(attempt({ stderr: 'ctr: failed to create shim task: connection error: desc = "error reading server preface: EOF"\n' })), undefined);
    assert.equal(lostGrpcRace(attempt({ stderr: 'ctr: failed to create shim task: task g1: the VM did not boot\n' })), undefined);
    // The race's error text, but containerd never cleaned this shim up: something else removed the bundle.
    assert.equal(lostGrpcRace(attempt({ log: raceLog.split('\n').slice(0, 2).join('\n') })), undefined);
    // Another task not found, or this one without containerd's cleanup of its shim.
    assert.equal(lostGrpcRace(attempt({ stderr: 'ctr: task g12 not found\n' })), undefined);
    assert.equal(lostGrpcRace(attempt({ stderr: 'ctr: task g1 not found\n', log: raceLog.split('\n').slice(0, 2).join('\n') })), undefined);
    // Another attempt's shim was cleaned up, not this one's.
    assert.equal(lostGrpcRace(attempt({ id: 'g12', bundle: bundle.replace(/g1$/, 'g12'), stderr: bundleGone.replaceAll('/g1/', '/g12/') })), undefined);
    // Over ttrpc there is no such race.
    assert.equal(lostGrpcRace(attempt({ log: raceLog.replace('protocol=grpc', 'protocol=ttrpc') })), undefined);
    // Out of order: the cleanup line before the connection.
    assert.equal(lostGrpcRace(attempt({ log: raceLog.split('\n').reverse().join('\n') })), undefined);
  });
});
