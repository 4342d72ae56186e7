// The emulated host's own exit codes (integration-tests/emulated-host, header): CMD's status, 121
// (its kernel's silent triple fault), 122 (its kernel's page-fault-entry panic), 123 (ended without
// reporting one), 124 (EMULATED_HOST_TIMEOUT), 125 (no heartbeat for EMULATED_HOST_STALL_SECONDS);
// and run-tests' one retry of a test that met the emulated host's fault, and its one rerun of a
// file whose host failed (121, 125), each in a fresh emulated host. Each case starts emulated
// hosts, so this file runs on the build machine (`make harness-test`), never nested: ~3 min in all.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../../shim/src/util/paths.js';
import { SILENT_TRIPLE_FAULT, STOP_HEARTBEAT } from './host-faults.js';

const EMULATED_HOST = path.join(repoRoot(), 'integration-tests', 'emulated-host');

function emulatedHost(command: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string; seconds: number }> {
  return run(EMULATED_HOST, ['bash', '-c', command], env);
}

function run(file: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string; seconds: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = (Date.now() - started) / 1000;
      process.stdout.write(`# ${path.basename(file)} exited ${code} after ${seconds.toFixed(1)} s; stderr:\n${stderr.replace(/\r/g, '').replace(/^/gm, '# ')}\n`);
      resolve({ code, stdout, stderr, seconds });
    });
  });
}

describe('emulated-host exit codes', () => {
  it("passes CMD's exit status and output through", async () => {
    const r = await emulatedHost('echo "out $EMULATED_HOST"; echo err >&2; exit 7');
    assert.equal(r.code, 7);
    assert.equal(r.stdout, 'out 1\n');
    assert.match(r.stderr, /^err$/m);
  });

  it('exits 123 when the emulated host ends without reporting a status (the job reboots it)', async () => {
    // busybox's `reboot -f` calls reboot(2) at once: init never gets to send the exit marker.
    const r = await emulatedHost('echo rebooting; sync; busybox reboot -f; sleep 600');
    assert.equal(r.code, 123);
    assert.match(r.stdout, /rebooting/);
    assert.match(r.stderr, /the emulated host ended without reporting an exit status/);
  });

  it("exits 122 when the emulated host's kernel panicked after hitting its stack guard page (that fault's log, simulated)", async () => {
    // The kernel log is the serial console, so the job can write the fault's two lines itself.
    const r = await emulatedHost(`
      echo '<0>BUG: TASK stack guard page was hit at 00000000a09de074 (simulated by the test)' >/dev/kmsg
      echo '<0>Kernel panic - not syncing: Fatal exception in interrupt (simulated by the test)' >/dev/kmsg
      sync; busybox reboot -f; sleep 600`);
    assert.equal(r.code, 122);
    assert.match(r.stderr, /the emulated host's own kernel panicked running [\s\S]*stack guard page/);
    assert.match(r.stderr, /simulated by the test/);
  });

  it("exits 121 when the emulated host's kernel triple-faulted saying nothing (simulated: a restart with the console silenced)", async () => {
    const r = await emulatedHost(SILENT_TRIPLE_FAULT);
    assert.equal(r.code, 121);
    assert.match(r.stderr, /the emulated host's own kernel triple-faulted running .*saying nothing first/);
  });

  it('panics on any oops, so the stack-guard fault is 122 in a task too, not a killed vCPU thread', async () => {
    const r = await emulatedHost('cat /proc/sys/kernel/panic_on_oops');
    assert.equal(r.code, 0);
    assert.equal(r.stdout, '1\n');
  });

  it('exits 123, not 122, for any other panic (a missing init, here)', async () => {
    const r = await emulatedHost('exit 0', { EMULATED_HOST_APPEND: 'rdinit=/no-such-init' });
    assert.equal(r.code, 123);
    assert.match(r.stderr, /Kernel panic - not syncing/);
  });

  it('exits 124 after EMULATED_HOST_TIMEOUT seconds', async () => {
    const r = await emulatedHost('sleep 600', { EMULATED_HOST_TIMEOUT: '3' });
    assert.equal(r.code, 124);
    assert.match(r.stderr, /TIMEOUT: .*still running after 3s \(EMULATED_HOST_TIMEOUT\)/);
    assert.ok(r.seconds < 60, `took ${r.seconds} s`);
  });

  it('exits 125 when the heartbeat stops for EMULATED_HOST_STALL_SECONDS (a frozen host, simulated)', async () => {
    const r = await emulatedHost(STOP_HEARTBEAT, { EMULATED_HOST_STALL_SECONDS: '12' });
    assert.match(r.stdout, /stopped [1-9]\d* heartbeat process\(es\)/);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /STALLED: no heartbeat from the emulated host for 12s/);
    // What the host was doing: here idle, both vCPUs halted in the kernel's idle loop.
    assert.match(r.stderr, /--- QEMU's threads: [\s\S]* CPU 0\/TCG [\s\S]*--- its vCPUs \(QEMU monitor\) ---/);
    assert.match(r.stderr, /RIP ffffffff[0-9a-f]+: \w+/);
  });
});

/** Emulated hosts started, by their first line (a loud report's kernel log tail has "running the job"). */
const hostsStarted = (stderr: string) => (stderr.match(/^emulated-host: running '/gm) ?? []).length;

describe('run-tests --each-in-run-vm: the emulated host\'s faults', () => {
  const fixture = path.join(repoRoot(), 'dist', 'integration-tests', 'host', 'fault-once.fixture.js');
  const runTests = (faults: number, hostFault?: 'triple-fault' | 'freeze') => {
    const counter = path.join(repoRoot(), 'build', `fault-once-runs-${faults}`);
    fs.rmSync(counter, { force: true });
    const r = run(process.execPath, [path.join(repoRoot(), 'dist', 'integration-tests', 'run-tests.js'), '--each-in-run-vm', fixture], {
      STENCIL_FIXTURE_RUNS: counter,
      STENCIL_FIXTURE_FAULTS: String(faults),
      ...(hostFault ? { STENCIL_FIXTURE_HOST_FAULT: hostFault, EMULATED_HOST_STALL_SECONDS: '12' } : {}),
    });
    return r.finally(() => fs.rmSync(counter, { force: true }));
  };

  it('a test that failed with the VMM\'s triple-fault report runs once more, in a fresh emulated host, and counts as passed there', async () => {
    const r = await runTests(1);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /# EMULATED-HOST FAULT: 'a test whose guest triple-faults' \(fault-once\.fixture\.js\) failed with triple-fault \(vCPU 0 triple-faulted/);
    assert.match(r.stdout, /# EMULATED-HOST FAULT RETRY: 'a test whose guest triple-faults' passed on the retry/);
    assert.equal(hostsStarted(r.stderr), 2, 'the retry ran in a second emulated host');
    assert.match(r.stdout, /\nintegration: 1 of 1 files passed; emulated-host fault retries: 1; emulated-host kernel fault reruns: 0; .*\n$/);
  });

  it('one that fails there again fails the run, named, after one retry only', async () => {
    const r = await runTests(2);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /# EMULATED-HOST FAULT RETRY: 'a test whose guest triple-faults' FAILED again on the retry/);
    assert.match(r.stdout, /# FAILED: 'a test whose guest triple-faults' \(fault-once\.fixture\.js\) on its retry in a fresh emulated host: .*triple-fault/);
    assert.equal(hostsStarted(r.stderr), 2);
    assert.match(r.stdout, /\nintegration: 0 of 1 files passed \(failed: fault-once\.fixture\.js\); emulated-host fault retries: 1; .*\n$/);
  });

  it("a file whose emulated host's kernel triple-faulted without a word runs once more, in a fresh one", async () => {
    const r = await runTests(1, 'triple-fault');
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /# EMULATED-HOST KERNEL FAULT RERUN: the emulated host running fault-once\.fixture\.js triple-faulted without a word \(exit status 121/);
    assert.match(r.stdout, /# EMULATED-HOST KERNEL FAULT RERUN: fault-once\.fixture\.js passed/);
    assert.equal(hostsStarted(r.stderr), 2, 'the rerun ran in a second emulated host');
    assert.match(r.stdout, /\nintegration: 1 of 1 files passed; emulated-host fault retries: 0; emulated-host kernel fault reruns: 1; .*\n$/);
  });

  it('so does a file whose emulated host froze', async () => {
    const r = await runTests(1, 'freeze');
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /# EMULATED-HOST KERNEL FAULT RERUN: the emulated host running fault-once\.fixture\.js froze .*\(exit status 125/);
    assert.match(r.stdout, /# EMULATED-HOST KERNEL FAULT RERUN: fault-once\.fixture\.js passed/);
    assert.equal(hostsStarted(r.stderr), 2, 'the rerun ran in a second emulated host');
  });
});
