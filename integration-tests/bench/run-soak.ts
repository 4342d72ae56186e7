// Run soak: guests that keep running (a console tick every ~5 ms) for SECONDS, side by side, by
// Stencil and by QEMU with anonymous RAM and with shared file-backed RAM (/dev/shm, as Stencil's
// tmpfs RAM). Prints per guest whether it survived and how far it ticked, then one JSON line per
// kind. Written to tell a VMM bug from a host bug: in the emulated host (QEMU TCG, nested KVM)
// long-running guests triple-fault or stall in a #PF loop under Stencil and under QEMU alike
// (integration-tests/README.md, "Long-running guests in the emulated host").
//   integration-tests/run-vm node dist/integration-tests/bench/run-soak.js [--seconds 100] [--each 2] [--kinds stencil,qemu-anon,qemu-shm]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CMDLINE } from '../../shim/src/hypervisor/microvm.js';
import { builtGuestArtifacts, repoRoot } from '../../shim/src/util/paths.js';
import { emit, note } from '../lib/bench-stats.js';
import { guestParams, MEMORY_DIR } from '../lib/guest.js';
import { guestBzImage, VmmProcess } from '../lib/vmm-process.js';

const KINDS = ['stencil', 'qemu-anon', 'qemu-shm'] as const;
type Kind = (typeof KINDS)[number];
const MEMORY_MIB = 256;
const TICKER = 'mkfifo /tmp/tick; exec 3<>/tmp/tick; i=0; while true; do echo "t $i"; i=$((i+1)); read -t 0.005 -u 3 x; done';
/** A guest that printed no tick for this long at the end is stalled. */
const STALL_MS = 10_000;

function spawn(kind: Kind, index: number): { proc: VmmProcess; cleanup: () => void } {
  const boot = ['-kernel', guestBzImage(), '-initrd', builtGuestArtifacts().initrd, '-append', `${DEFAULT_CMDLINE} ${guestParams(TICKER).join(' ')}`];
  const qemu = ['-enable-kvm', '-cpu', 'host', '-smp', '1', '-m', `${MEMORY_MIB}M`, '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio', ...boot];
  if (kind === 'stencil') {
    const args = ['vm', 'run', '--kernel', guestBzImage(), '--initrd', builtGuestArtifacts().initrd, '--vcpus', '1', '--memory', `${MEMORY_MIB}M`,
      '--memory-dir', MEMORY_DIR, '--cmdline', guestParams(TICKER).join(' ')];
    return { proc: new VmmProcess(path.join(repoRoot(), 'bin', 'stencil'), args), cleanup: () => {} };
  }
  if (kind === 'qemu-anon') return { proc: new VmmProcess('qemu-system-x86_64', ['-M', 'microvm,acpi=off', ...qemu]), cleanup: () => {} };
  fs.mkdirSync(MEMORY_DIR, { recursive: true });
  const file = path.join(MEMORY_DIR, `run-soak-${process.pid}-${index}`);
  const backend = ['-object', `memory-backend-file,id=ram,size=${MEMORY_MIB}M,mem-path=${file},share=on`, '-M', 'microvm,acpi=off,memory-backend=ram'];
  return { proc: new VmmProcess('qemu-system-x86_64', [...backend, ...qemu]), cleanup: () => fs.rmSync(file, { force: true }) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '100' }, each: { type: 'string', default: '2' }, kinds: { type: 'string', default: KINDS.join(',') } } });
  const seconds = Number(values.seconds);
  const each = Number(values.each);
  const kinds = values.kinds!.split(',') as Kind[];
  for (const k of kinds) if (!KINDS.includes(k)) throw new Error(`--kinds: unknown kind '${k}' (${KINDS.join(', ')})`);
  if (!(seconds > 0) || !(each > 0)) throw new Error('--seconds and --each must be positive numbers');
  note(`run soak: ${each} guest(s) of each of ${kinds.join(', ')} for ${seconds} s, side by side`);
  const guests = kinds.flatMap((kind) => Array.from({ length: each }, (_, i) => ({ kind, ...spawn(kind, i), exited: false })));
  for (const g of guests) g.proc.exited.then(() => (g.exited = true));
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const results = guests.map((g) => {
    const text = g.proc.out.text;
    const ticks = [...text.matchAll(/^t (\d+)\r?$/gm)];
    const lastTickAt = [...g.proc.out.stdout].reverse().find((c) => /t \d+\r?\n/.test(c.text))?.at ?? 0;
    const stalled = !g.exited && performance.now() - lastTickAt > STALL_MS;
    const exit = /VM exited: (\S+)/.exec(text)?.[1] ?? (g.exited ? 'exited' : undefined);
    const survived = !g.exited && !stalled;
    const said = survived ? '' : `; last output: ${JSON.stringify(text.split('\n').filter((l) => !/^t \d+\r?$/.test(l)).slice(-3).join(' | ').slice(-400))}`;
    note(`${g.kind}: ${survived ? 'running' : g.exited ? `ended (${exit})` : 'stalled'}, last tick ${ticks.at(-1)?.[1] ?? 'none'}${said}`);
    return { kind: g.kind, survived, ended: g.exited, stalled, exit, ticks: ticks.length };
  });
  for (const g of guests) {
    await g.proc.kill('SIGKILL');
    g.cleanup();
  }
  for (const kind of kinds) {
    const rs = results.filter((r) => r.kind === kind);
    emit({ figure: `run_soak_${kind.replace('-', '_')}`, unit: 'guests', seconds, guests: rs.length, survived: rs.filter((r) => r.survived).length,
      ended: rs.filter((r) => r.ended).map((r) => r.exit), stalled: rs.filter((r) => r.stalled).length, ticks: rs.map((r) => r.ticks) });
  }
}

main().then(() => process.exit(0), (err: Error) => {
  note(`run soak failed: ${err.stack ?? err.message}`);
  process.exit(1);
});
