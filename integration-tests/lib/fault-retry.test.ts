import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exactNamePattern, failedTests, failureError, pageFaultStorm, retryable } from './fault-retry.js';

const FAULT = 'the VM of pod pod-d3f ended on its own: triple-fault (vCPU 0 triple-faulted (KVM_EXIT_SHUTDOWN); vCPU state: rip=0xfff0';

function failure(name: string, error: string, failureType = 'testCodeFailure', indent = '    '): string {
  return [
    `${indent}# Subtest: ${name}`,
    `${indent}not ok 2 - ${name}`,
    `${indent}  ---`,
    `${indent}  duration_ms: 9500.5`,
    `${indent}  location: '/repo/dist/integration-tests/containerd/shim.test.js:270:3'`,
    `${indent}  failureType: '${failureType}'`,
    `${indent}  error: |-`,
    `${indent}    ${error}`,
    `${indent}  code: 'ERR_ASSERTION'`,
    `${indent}  ...`,
  ].join('\n');
}

function report(...tests: string[]): string {
  return [
    'TAP version 13',
    '# Subtest: containerd 2.1 with the Stencil shim',
    '    # Subtest: passes',
    '    ok 1 - passes',
    '      ---',
    '      duration_ms: 1',
    '      ...',
    ...tests,
    '    1..3',
    'not ok 1 - containerd 2.1 with the Stencil shim',
    '  ---',
    "  type: 'suite'",
    "  location: '/repo/dist/integration-tests/containerd/shim.test.js:20:1'",
    "  failureType: 'subtestsFailed'",
    "  error: '1 subtest failed'",
    '  ...',
    '# fail 1',
  ].join('\n');
}

describe('the emulated-host fault retry', () => {
  it('finds the failed tests (not their suites), with file and error, and unescapes TAP names', () => {
    const found = failedTests(report(failure('checkpoint \\# 1 (ctr c restore)', FAULT)));
    assert.equal(found.length, 1);
    assert.equal(found[0].name, 'checkpoint # 1 (ctr c restore)');
    assert.equal(found[0].file, '/repo/dist/integration-tests/containerd/shim.test.js');
    assert.match(found[0].detail, /KVM_EXIT_SHUTDOWN/);
  });

  it('retries only when every failure is a test that failed with the guest fault', () => {
    assert.equal(retryable(failedTests(report(failure('a', FAULT), failure('b', FAULT)))).length, 2);
    assert.deepEqual(retryable(failedTests(report(failure('a', FAULT), failure('b', 'expected 7, got 1')))), []);
    assert.deepEqual(retryable(failedTests(report(failure('a', 'exit code 1 !== 0')))), []);
    assert.deepEqual(retryable(failedTests(report(failure('a', FAULT, 'hookFailure')))), []);
    assert.deepEqual(retryable(failedTests(report(failure('a', 'guest said: triple-fault handling is fine')))), []);
    assert.deepEqual(retryable([]), []);
  });

  it('matches the fault as a pod start reports it through ctr (a clone that triple-faulted before its agent answered)', () => {
    const ctr = 'ctr: failed to create shim task: cannot start the pod VM: pod pod-de8: the VM ended before the agent answered: ' +
      'triple-fault (vCPU 1 triple-faulted (KVM_EXIT_SHUTDOWN); vCPU state: rip=0xfff0); VM exits: {"exitsByReason":{"shutdown":1}}';
    assert.equal(retryable(failedTests(report(failure('ctr run --rm echo hi over gRPC', ctr)))).length, 1);
  });

  it('also retries the tests after a fault in the same file that failed because its guest was gone, never such a failure before it or in another file', () => {
    const gone = 'VsockConnectError: vsock connect to port 1024 via /tmp/stencil-pod-p-1/vsock.sock: the connection closed during the handshake (is anything listening on that port?)';
    assert.equal(retryable(failedTests(report(failure('a', FAULT), failure('b', gone)))).length, 2);
    assert.deepEqual(retryable(failedTests(report(failure('a', gone), failure('b', FAULT)))), []);
    const [fault] = failedTests(report(failure('a', FAULT)));
    const [other] = failedTests(report(failure('b', gone)));
    assert.deepEqual(retryable([fault, { ...other, file: '/repo/dist/integration-tests/vm/pod.test.js' }]), []);
  });

  it('retries a guest that hung in a page-fault storm (nearly every exit a reflected #PF), never one hung otherwise', () => {
    const hung = (exits: number, pf: number) =>
      `guest did not finish within 180000 ms; console so far: rcu: INFO: rcu_sched detected stalls exit stats: {"exitsByReason":{"io":11571},"kvmVcpuStats":{"blocking":1,"exits":${exits},"halt_exits":36789,"pf_guest":${pf},"tlb_flush":27}}`;
    // The stats of the hang seen in CI (boot.test, 2 vCPUs, acpi=off).
    assert.match(pageFaultStorm(hung(4789656, 4688013)) ?? '', /4688013 page faults reflected into it, of 4789656 exits/);
    assert.equal(retryable(failedTests(report(failure('a', hung(4789656, 4688013))))).length, 1);
    // Hung, but its exits were not page faults; or too few of them to be a storm.
    assert.deepEqual(retryable(failedTests(report(failure('a', hung(4789656, 1000000))))), []);
    assert.deepEqual(retryable(failedTests(report(failure('a', hung(50000, 49000))))), []);
    // A storm's numbers in a test that did not hang (an assertion on its output) are no hang.
    assert.equal(pageFaultStorm(hung(4789656, 4688013).replace('guest did not finish within 180000 ms', 'wrong output')), undefined);
    // The shim's report of a pod whose guest stopped answering, as containerd logs it (JSON in JSON).
    const shim = (exits: number, pf: number) =>
      `{"level":"error","message":"the guest of pod pod-1 stopped answering (agent Stats(c): no answer within 60000 ms, nor a ping within 10000 ms); its vCPUs are paused; VM exits: {\\"exitsByReason\\":{\\"io\\":9},\\"kvmVcpuStats\\":{\\"exits\\":${exits},\\"pf_guest\\":${pf}}}"}`;
    assert.match(pageFaultStorm(shim(2000000, 1990000)) ?? '', /1990000 page faults reflected into it, of 2000000 exits/);
    assert.equal(pageFaultStorm(shim(2000000, 1000)), undefined);
    // A clone that never printed what the test waited for (snapshot.test), with its exit stats.
    const quiet = hung(4789656, 4688013).replace('guest did not finish within 180000 ms', 'console never showed /tick-(\\d+)\\r?\\n/ within 120000 ms');
    assert.match(pageFaultStorm(quiet) ?? '', /4688013 page faults reflected into it/);
    // A `stencil vm run` guest that never ticked (vm/qmp.test), with the stats its QMP gave.
    const noTick = hung(4789656, 4688013).replace('guest did not finish within 180000 ms', 'console never showed a tick >= 3 within 180000 ms');
    assert.match(pageFaultStorm(noTick) ?? '', /4688013 page faults reflected into it/);
    // One CRI ExecSync unanswered while the agent answered pings (cri.test, 2 vCPUs), as the CRI
    // client gets containerd's error; and the same without a storm in its stats.
    const slow = (exits: number, pf: number) =>
      `ExecSync: 2 UNKNOWN: failed to exec in container: agent ExecProcess(c1/e2): no answer within 60000 ms, though the guest answered a ping; VM exits: {"exitsByReason":{"io":9},"kvmVcpuStats":{"exits":${exits},"pf_guest":${pf}}}`;
    assert.match(pageFaultStorm(slow(2000000, 1990000)) ?? '', /1990000 page faults reflected into it, of 2000000 exits/);
    assert.equal(pageFaultStorm(slow(2000000, 1000)), undefined);
    assert.equal(pageFaultStorm(slow(2000000, 1990000).replace(', though the guest answered a ping', '')), undefined);
  });

  it("gives a failure's error, a block or quoted, cut at a length that says how much is left", () => {
    const [block] = failedTests(report(failure('a', 'ctr: no metrics received')));
    assert.equal(failureError(block), 'ctr: no metrics received');
    const hook = failure('b', 'x', 'hookFailed').replace(/error: \|-\n\s*x/, "error: 'after stop(): it''s still there'");
    const [quoted] = failedTests(report(hook));
    assert.equal(quoted.failureType, 'hookFailed');
    assert.equal(failureError(quoted), "after stop(): it's still there");
    const [long] = failedTests(report(failure('c', 'y'.repeat(1000))));
    assert.equal(failureError(long, 10), `${'y'.repeat(10)}... (990 more characters in the TAP report)`);
    assert.equal(failureError({ ...long, detail: 'duration_ms: 1' }), '(no error reported)');
  });

  it('builds a name pattern that matches that name exactly', () => {
    const name = 'checkpoint and restore (ctr c checkpoint --task, ctr c restore --live): the restored container counts on [1/2]?';
    const re = new RegExp(exactNamePattern(name));
    assert.ok(re.test(name));
    assert.ok(!re.test(`${name} too`));
    assert.ok(!re.test(name.replace('(', '')));
  });
});
