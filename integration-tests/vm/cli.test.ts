// `stencil check` and `stencil vm run` with the real guest where VM tests run (a real KVM, or the
// emulated host's nested KVM). Host-runnable exit-code cases: shim/src/cli/exit-codes.test.ts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../../shim/src/util/paths.js';
import { BOOT_TIMEOUT_MS, guestParams, MEMORY_DIR } from '../lib/guest.js';

const STENCIL = path.join(repoRoot(), 'bin', 'stencil');

function stencil(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [STENCIL, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), BOOT_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      process.stdout.write(`# stencil ${args[0]} ${args[1] ?? ''} exited ${code}; stderr:\n${stderr.replace(/^/gm, '# ')}\n`);
      resolve({ code, stdout, stderr });
    });
  });
}

const vmRun = (...params: string[]) => stencil(['vm', 'run', '--memory-dir', MEMORY_DIR, '--cmdline', params.join(' ')]);

describe('stencil CLI with the real guest', () => {
  it('check exits 0 where VM tests run: this KVM runs stock guests', async () => {
    const r = await stencil(['check']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok +kvm-stock-guests/m);
  });

  it('vm run exits 0 when the guest powers off, with the console on stdout', async () => {
    const r = await vmRun(...guestParams('echo cli-run-ok', { then: 'poweroff' }));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /stencil-guest: init reached[\s\S]*cli-run-ok/);
    assert.match(r.stderr, /VM exited: poweroff/);
  });

  it('vm run exits 1 when the guest kernel triple-faults (its reboot=t reboot method)', async () => {
    const r = await vmRun(...guestParams('echo about-to-triple-fault', { then: 'reboot', append: 'reboot=t' }));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /about-to-triple-fault/);
    assert.match(r.stderr, /VM exited: triple-fault \(vCPU 0 triple-faulted .*vCPU state: .*exits; last/);
  });
});
