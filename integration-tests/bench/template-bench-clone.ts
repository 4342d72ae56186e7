// template-bench, figure `stencil_clone_vs_qemu_clone`: a paused, saved guest cloned by Stencil
// (MicroVm.restore, copy-on-write RAM) and by QEMU (x-ignore-shared: the RAM stays in a file the
// clone maps share=off, only device state is migrated), timed to the clone's first new line of
// output. Both VMMs get the same bzImage, initramfs, 256 MiB, 1 vCPU and command line; the guest
// prints a marker, then `tick N` every 50 ms. QEMU's sequence is the one in
// shared/reference/measurements.md (template: stop, migrate-set-capabilities x-ignore-shared,
// migrate "exec:cat>STATE"; clone: -incoming defer, the same capability, migrate-incoming
// "exec:cat STATE", wait for completion, cont).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_CMDLINE, MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { builtGuestArtifacts, repoRoot } from '../../shim/src/util/paths.js';
import { median, MIB, note, round } from '../lib/bench-stats.js';
import { ConsoleCapture, guestParams, guestSpec } from '../lib/guest.js';
import { QmpClient } from '../lib/qmp-client.js';
import { guestBzImage, VmmProcess } from '../lib/vmm-process.js';

const MEMORY_MIB = 256;
const TIMEOUT_MS = 180_000;
const GOAL_SPEEDUP = 5;
const GUEST_SCRIPT = `echo "stencil-clone-bench $((6 * 7))"; i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.05; done`;
const TICK = /tick (\d+)\r?\n/;
const CMDLINE = [DEFAULT_CMDLINE, ...guestParams(GUEST_SCRIPT)].join(' ');

export class QemuCloneBench {
  readonly ramFile: string;
  readonly stateFile: string;
  private readonly qmpSocket: string;
  lastTemplateTick = -1;
  saveMs = 0;

  constructor(dir: string) {
    this.ramFile = path.join(dir, 'ram');
    this.stateFile = path.join(dir, 'state');
    this.qmpSocket = path.join(dir, 'qmp.sock');
  }

  args(role: 'template' | 'clone'): string[] {
    const { initrd } = builtGuestArtifacts();
    return [
      '-M', 'microvm,acpi=off,memory-backend=pc.ram',
      '-object', `memory-backend-file,id=pc.ram,size=${MEMORY_MIB}M,mem-path=${this.ramFile},share=${role === 'template' ? 'on' : 'off'}`,
      '-enable-kvm', '-cpu', 'host', '-smp', '1', '-m', `${MEMORY_MIB}M`,
      '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio',
      '-kernel', guestBzImage(), '-initrd', initrd, '-append', CMDLINE,
      '-qmp', `unix:${this.qmpSocket},server=on,wait=off`,
      ...(role === 'clone' ? ['-incoming', 'defer'] : []),
    ];
  }

  /** Boots the template, lets it tick, stops it and saves its device state next to its RAM file. */
  async makeTemplate(): Promise<void> {
    const q = new VmmProcess('qemu-system-x86_64', this.args('template'), [this.qmpSocket]);
    let qmp: QmpClient | undefined;
    try {
      await q.waitFor(/tick 5\r?\n/, 'QEMU template', TIMEOUT_MS);
      qmp = await QmpClient.connect(this.qmpSocket);
      const t0 = performance.now();
      await qmp.execute('stop');
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await qmp.execute('migrate', { uri: `exec:cat>${this.stateFile}` });
      for (;;) {
        const info = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
        if (info.status === 'completed') break;
        if (info.status === 'failed' || info.status === 'cancelled') throw new Error(`QEMU template save: migration ${info.status}: ${info['error-desc'] ?? ''}`);
        await new Promise((r) => setTimeout(r, 5));
      }
      this.saveMs = performance.now() - t0;
      this.lastTemplateTick = Math.max(...[...q.out.text.matchAll(/tick (\d+)\r?\n/g)].map((m) => Number(m[1])));
    } finally {
      qmp?.close();
      await q.kill();
    }
  }

  /** Spawn -> the clone's first `tick` line, in ms. */
  async clone(): Promise<{ ms: number; tick: number }> {
    const t0 = performance.now();
    const q = new VmmProcess('qemu-system-x86_64', this.args('clone'), [this.qmpSocket]);
    let qmp: QmpClient | undefined;
    try {
      qmp = await QmpClient.connect(this.qmpSocket);
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await qmp.execute('migrate-incoming', { uri: `exec:cat ${this.stateFile}` });
      for (;;) {
        const info = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
        if (info.status === 'completed') break;
        if (info.status === 'failed') throw new Error(`QEMU clone: incoming migration failed: ${info['error-desc'] ?? ''}\n${q.out.text.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 2));
      }
      await qmp.execute('cont');
      const m = await q.waitFor(TICK, 'QEMU clone', TIMEOUT_MS);
      return { ms: performance.now() - t0, tick: Number(m[1]) };
    } finally {
      qmp?.close();
      await q.kill();
    }
  }
}

export class StencilCloneBench {
  lastTemplateTick = -1;
  saveMs = 0;
  private n = 0;

  constructor(readonly dir: string) {}

  spec() {
    return { ...guestSpec(undefined, { memoryBytes: MEMORY_MIB * MIB }), kernel: guestBzImage(), cmdline: CMDLINE, memoryDir: this.dir };
  }

  async makeTemplate(): Promise<void> {
    const vm = MicroVm.create({ ...this.spec(), name: `clone-bench-template-${process.pid}` });
    const console = new ConsoleCapture(vm);
    try {
      vm.start();
      await console.waitFor(/tick 5\r?\n/, TIMEOUT_MS);
      const t0 = performance.now();
      await vm.pause();
      vm.saveSnapshot(this.dir);
      this.saveMs = performance.now() - t0;
      this.lastTemplateTick = Math.max(...[...console.text.matchAll(/tick (\d+)\r?\n/g)].map((m) => Number(m[1])));
    } finally {
      await vm.destroy();
    }
  }

  /** MicroVm.restore -> the clone's first `tick` line, in this process, in ms. */
  async clone(): Promise<{ ms: number; tick: number }> {
    const t0 = performance.now();
    const vm = MicroVm.restore(`clone-bench-${process.pid}-${++this.n}`, { restoreFrom: this.dir });
    try {
      const console = new ConsoleCapture(vm);
      vm.start();
      const ended = vm.waitExit().then((exit) => {
        throw new Error(`the Stencil clone ended (${exit.reason}: ${exit.detail}); console:\n${console.text.slice(-2000)}`);
      });
      ended.catch(() => undefined);
      const m = await Promise.race([console.waitFor(TICK, TIMEOUT_MS), ended]);
      return { ms: performance.now() - t0, tick: Number(m[1]) };
    } finally {
      await vm.destroy();
    }
  }
}

/** Whether `stencil vm run` here can restore a saved VM as a whole process (its --help lists --incoming). */
function stencilCliIncoming(): boolean {
  const help = spawnSync(path.join(repoRoot(), 'bin', 'stencil'), ['vm', 'run', '--help'], { encoding: 'utf8' });
  return /--incoming/.test(`${help.stdout}${help.stderr}`);
}

export async function cloneVsQemu(scratch: string, rounds: number): Promise<Record<string, unknown>> {
  const qemuDir = fs.mkdtempSync(path.join(scratch, 'qemu-'));
  const stencilDir = fs.mkdtempSync(path.join(scratch, 'stencil-'));
  try {
    const qemu = new QemuCloneBench(qemuDir);
    const stencil = new StencilCloneBench(stencilDir);
    note('clone bench: QEMU template');
    await qemu.makeTemplate();
    note(`clone bench: QEMU template saved in ${Math.round(qemu.saveMs)} ms at tick ${qemu.lastTemplateTick}; Stencil template`);
    await stencil.makeTemplate();
    note(`clone bench: Stencil template saved in ${Math.round(stencil.saveMs)} ms at tick ${stencil.lastTemplateTick}`);
    // Warm-up of each, then interleaved rounds.
    await qemu.clone();
    await stencil.clone();
    const runs = { qemu: [] as number[], stencil: [] as number[] };
    const firstTicks = { qemu: [] as number[], stencil: [] as number[] };
    for (let i = 0; i < rounds; i++) {
      const q = await qemu.clone();
      const s = await stencil.clone();
      runs.qemu.push(q.ms);
      runs.stencil.push(s.ms);
      firstTicks.qemu.push(q.tick);
      firstTicks.stencil.push(s.tick);
      note(`clone bench round ${i + 1}: qemu ${Math.round(q.ms)} ms, stencil ${Math.round(s.ms)} ms`);
    }
    const q = median(runs.qemu);
    const s = median(runs.stencil);
    const cliNote = stencilCliIncoming()
      ? 'not measured: bin/stencil vm run lists --incoming, but this benchmark does not time it yet'
      : 'not measured: bin/stencil vm run has no --incoming on this tree';
    return {
      figure: 'stencil_clone_vs_qemu_clone',
      unit: 'ms',
      runs: rounds,
      memory_mib: MEMORY_MIB,
      vcpus: 1,
      what: "spawn (QEMU) / MicroVm.restore (Stencil, in-process) to the clone's first `tick N` line on its console",
      stencil_in_process_median: round(s, 1),
      qemu_x_ignore_shared_median: Math.round(q),
      speedup: round(q / s, 1),
      ratio: round(s / q, 4),
      ratio_meaning: 'stencil / qemu clone time (lower is better)',
      goal: `qemu / stencil >= ${GOAL_SPEEDUP} (Stencil's clone at least ${GOAL_SPEEDUP}x faster than QEMU's)`,
      goal_met: q / s >= GOAL_SPEEDUP,
      stencil_vm_run_incoming: cliNote,
      guest_script: GUEST_SCRIPT,
      cmdline: CMDLINE,
      qemu_template_command: ['qemu-system-x86_64', ...qemu.args('template')].join(' '),
      qemu_template_qmp: ['stop', '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":true}]}}',
        `{"execute":"migrate","arguments":{"uri":"exec:cat>${qemu.stateFile}"}}`, 'query-migrate until completed'],
      qemu_clone_command: ['qemu-system-x86_64', ...qemu.args('clone')].join(' '),
      qemu_clone_qmp: ['{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":true}]}}',
        `{"execute":"migrate-incoming","arguments":{"uri":"exec:cat ${qemu.stateFile}"}}`, 'query-migrate until completed', 'cont'],
      stencil_template: 'MicroVm.create (memoryDir on tmpfs), start, wait for tick 5, pause, saveSnapshot(dir)',
      stencil_clone: 'MicroVm.restore(name, { restoreFrom: dir }), start',
      qemu_template_save_ms: Math.round(qemu.saveMs),
      qemu_state_bytes: fs.statSync(qemu.stateFile).size,
      stencil_template_save_ms: round(stencil.saveMs, 1),
      stencil_state_bytes: fs.statSync(path.join(stencilDir, 'state')).size,
      template_last_tick: { qemu: qemu.lastTemplateTick, stencil: stencil.lastTemplateTick },
      clone_first_tick: firstTicks,
      qemu_runs: runs.qemu.map(Math.round),
      stencil_runs: runs.stencil.map((x) => round(x, 1)),
    };
  } finally {
    fs.rmSync(qemuDir, { recursive: true, force: true });
    fs.rmSync(stencilDir, { recursive: true, force: true });
  }
}
