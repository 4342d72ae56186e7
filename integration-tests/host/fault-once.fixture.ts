// A test file for emulated-host.test.ts's run-tests cases (never run on its own): its one test
// fails with the VMM's triple-fault report as many times as STENCIL_FIXTURE_FAULTS says, counting
// its runs in the file STENCIL_FIXTURE_RUNS (in the repository, which every emulated host shares).
// With STENCIL_FIXTURE_HOST_FAULT it does to its emulated host what QEMU TCG's faults do instead:
// `triple-fault` (without a word: a restart with the console silenced) or `freeze` (the host's
// heartbeat stopped, as emulated-host.test.ts's 125 case does).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { it } from 'node:test';
import { SILENT_TRIPLE_FAULT, STOP_HEARTBEAT } from './host-faults.js';

const HOST_FAULTS: Record<string, string> = {
  'triple-fault': SILENT_TRIPLE_FAULT,
  freeze: STOP_HEARTBEAT,
};

it('a test whose guest triple-faults', () => {
  const counter = process.env.STENCIL_FIXTURE_RUNS!;
  const runs = fs.existsSync(counter) ? Number(fs.readFileSync(counter, 'utf8')) : 0;
  fs.writeFileSync(counter, String(runs + 1));
  if (runs < Number(process.env.STENCIL_FIXTURE_FAULTS)) {
    const hostFault = process.env.STENCIL_FIXTURE_HOST_FAULT;
    if (hostFault) spawnSync('bash', ['-c', HOST_FAULTS[hostFault]], { stdio: 'inherit' });
    throw new Error('the VM of pod p ended on its own: triple-fault (vCPU 0 triple-faulted (KVM_EXIT_SHUTDOWN); vCPU state: rip=0xfff0)');
  }
});
