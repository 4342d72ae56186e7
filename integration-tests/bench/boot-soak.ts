// Boot soak: COUNT cold boots of the guest in a row with Stencil's VMM (default 50), one line
// per boot, then "N passed, M failed". Proves nested boots in the emulated host are reliable:
// every failure is printed with its console tail and counted; nothing is retried.
//   integration-tests/run-vm node dist/integration-tests/bench/boot-soak.js [COUNT]
import { MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { ConsoleCapture, guestSpec, withTimeout } from '../lib/guest.js';

const COUNT = Number(process.argv[2] ?? 50);
const TIMEOUT_MS = Number(process.env.STENCIL_SOAK_BOOT_TIMEOUT_MS ?? 90_000);

async function boot(i: number): Promise<number> {
  const t0 = performance.now();
  const vm = MicroVm.create(guestSpec('echo soak-ok', { vcpus: 1 + (i % 2), then: i % 3 ? 'poweroff' : 'reboot' }));
  const console = new ConsoleCapture(vm);
  try {
    vm.start();
    const exit = await withTimeout(vm.waitExit(), TIMEOUT_MS, 'guest did not finish', console);
    if (!console.text.includes('soak-ok')) throw new Error(`guest ended (${exit.reason}) without running its command:\n${console.text.slice(-2000)}`);
    if (exit.reason !== 'poweroff' && exit.reason !== 'reboot') throw new Error(`unexpected exit ${exit.reason}: ${exit.detail}`);
    return performance.now() - t0;
  } finally {
    await vm.destroy();
  }
}

async function main() {
  let passed = 0;
  let failed = 0;
  const times: number[] = [];
  for (let i = 0; i < COUNT; i++) {
    try {
      const ms = await boot(i);
      times.push(ms);
      passed++;
      process.stdout.write(`boot ${i + 1}/${COUNT}: ok ${Math.round(ms)} ms\n`);
    } catch (err) {
      failed++;
      process.stdout.write(`boot ${i + 1}/${COUNT}: FAILED: ${(err as Error).message}\n`);
    }
  }
  const sorted = [...times].sort((a, b) => a - b);
  if (sorted.length)
    process.stdout.write(`boot time: min ${Math.round(sorted[0])} ms, median ${Math.round(sorted[Math.floor(sorted.length / 2)])} ms, max ${Math.round(sorted[sorted.length - 1])} ms\n`);
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exit(failed ? 1 : 0);
}

void main();
