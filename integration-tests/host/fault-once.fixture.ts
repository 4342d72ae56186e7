// A test file for emulated-host.test.ts's run-tests cases (never run on its own): its one test
// fails with the VMM's triple-fault report as many times as STENCIL_FIXTURE_FAULTS says, counting
// its runs in the file STENCIL_FIXTURE_RUNS (in the repository, which every emulated host shares).
// With STENCIL_FIXTURE_HOST_FAULT=1 it makes its emulated host's kernel triple-fault without a word
// instead (a restart with the console silenced), as QEMU TCG's fault does to it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { it } from 'node:test';

it('a test whose guest triple-faults', () => {
  const counter = process.env.STENCIL_FIXTURE_RUNS!;
  const runs = fs.existsSync(counter) ? Number(fs.readFileSync(counter, 'utf8')) : 0;
  fs.writeFileSync(counter, String(runs + 1));
  if (runs < Number(process.env.STENCIL_FIXTURE_FAULTS) && process.env.STENCIL_FIXTURE_HOST_FAULT === '1') {
    spawnSync('sh', ['-c', 'echo 0 >/proc/sys/kernel/printk; sync; busybox reboot -f; sleep 600'], { stdio: 'inherit' });
  }
  if (runs < Number(process.env.STENCIL_FIXTURE_FAULTS)) {
    throw new Error('the VM of pod p ended on its own: triple-fault (vCPU 0 triple-faulted (KVM_EXIT_SHUTDOWN); vCPU state: rip=0xfff0)');
  }
});
