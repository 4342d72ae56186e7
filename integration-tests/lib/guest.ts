// Helpers for tests that boot the real guest kernel: run a shell script in a fresh VM and collect
// its console, with a hard timeout so a stuck boot fails loudly instead of hanging the suite.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { defaultConfig } from '../../runtime-config/src/config.js';
import { DEFAULT_CMDLINE, MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { confineVmmThreads } from '../../shim/src/hypervisor/native.js';
import { describeExit, type VmExit, type VmSpec } from '../../shim/src/hypervisor/types.js';
import { withDeadline } from '../../shim/src/util/deadline.js';
import { builtGuestArtifacts, repoRoot } from '../../shim/src/util/paths.js';

// The VMs of every VM test (they all use these helpers) run as the product runs them by default:
// each VMM thread confined to its seccomp allow-list. A call missing from a list ends the test's
// process with a line naming the thread and the call.
confineVmmThreads(defaultConfig().hypervisor);

export const MEMORY_DIR = '/dev/shm/stencil-tests';
export const BOOT_TIMEOUT_MS = Number(process.env.STENCIL_TEST_BOOT_TIMEOUT_MS ?? 180_000);

let counter = 0;

/** VmSpec fields to override, plus what the guest's /init should do after the script. */
export type GuestOptions = Partial<VmSpec> & { then?: 'poweroff' | 'reboot' | 'halt'; append?: string };

/** The kernel parameters (beyond DEFAULT_CMDLINE) that make the guest's /init run `script`, then `then`. */
export function guestParams(script: string | undefined, { then, append }: Pick<GuestOptions, 'then' | 'append'> = {}): string[] {
  return [
    script === undefined ? '' : `stencil_run=${Buffer.from(script).toString('base64')}`,
    then ? `stencil_then=${then}` : '',
    append ?? '',
  ].filter(Boolean);
}

export function guestSpec(script: string | undefined, options: GuestOptions = {}): VmSpec {
  const { then, append, ...overrides } = options;
  const { kernel, initrd } = builtGuestArtifacts();
  fs.mkdirSync(MEMORY_DIR, { recursive: true, mode: 0o700 });
  const extra = guestParams(script, { then, append });
  return {
    name: `test-${process.pid}-${++counter}`,
    vcpus: 1,
    memoryBytes: 256 * 2 ** 20,
    kernel,
    initrd,
    cmdline: [DEFAULT_CMDLINE, ...extra].join(' '),
    memoryDir: MEMORY_DIR,
    memoryBacking: 'tmpfs',
    virtioRng: true,
    ...overrides,
  };
}

export class ConsoleCapture {
  text = '';
  private waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];
  constructor(private readonly vm: MicroVm) {
    vm.console.on('data', (chunk: Buffer) => {
      this.text += chunk.toString('latin1');
      if (process.env.STENCIL_TEST_CONSOLE) process.stderr.write(chunk);
      this.waiters = this.waiters.filter((w) => {
        const m = this.text.match(w.re);
        if (m) w.resolve(m);
        return !m;
      });
    });
  }
  /** Resolves with the first match of `re` in the console output so far or later. */
  waitFor(re: RegExp, timeoutMs = BOOT_TIMEOUT_MS): Promise<RegExpMatchArray> {
    const m = this.text.match(re);
    if (m) return Promise.resolve(m);
    return withTimeout(new Promise<RegExpMatchArray>((resolve) => this.waiters.push({ re, resolve })), timeoutMs, `VM ${this.vm.name}'s console never showed ${re}`, this).catch(
      (err: Error) => {
        throw withExitStats(err, this.vm);
      },
    );
  }
}

/** A hung guest's error, with its exit counts: they say whether its vCPUs still ran, halted or never left KVM (lib/fault-retry.ts reads them). */
export function withExitStats(err: Error, vm: MicroVm): Error {
  let stats: string;
  try {
    stats = JSON.stringify(vm.exitStats(6));
  } catch {
    return err; // the VM is gone: nothing to add
  }
  return new Error(`${err.message}\nexit stats: ${stats}`, { cause: err });
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string, console?: ConsoleCapture): Promise<T> {
  return withDeadline(p, ms, () => new Error(`${what} within ${ms} ms; console so far:\n${console?.text.slice(-3000) ?? ''}`));
}

export interface GuestRun {
  exit: VmExit;
  console: string;
  /** Output of the script (between the init marker and the exit marker). */
  output: string;
  /** The script's exit status as the guest reported it. */
  status: number | undefined;
}

const INIT_MARKER = 'stencil-guest: init reached\n';

/** Nested under QEMU TCG (the emulated host's init sets EMULATED_HOST=1): the only place a boot is retried. */
const NESTED_UNDER_TCG = process.env.EMULATED_HOST === '1';
/**
 * One line per boot ("boot <test>") and per retry ("retry <test> <exit detail>"), for the whole
 * test run: run-tests.ts (`make integration-test`) clears it first and prints "nested boot retries:
 * R of B guest boots" at the end, so a rising rate shows.
 */
export const GUEST_BOOT_LOG = path.join(repoRoot(), 'build', 'guest-boots.log');

function logBoot(line: string): void {
  fs.mkdirSync(path.dirname(GUEST_BOOT_LOG), { recursive: true });
  fs.appendFileSync(GUEST_BOOT_LOG, `${line.replace(/\n/g, ' ')}\n`);
}

/**
 * Boots a VM that runs `script`, waits for it to end, and tears it down. In the emulated host only,
 * a guest that triple-faults before its init announced itself (so before the script ran: no side
 * effects) is booted once more, loudly: nested guests under TCG's emulated SVM do this about once
 * in a few hundred boots (integration-tests/README.md). On a real KVM every triple fault counts.
 */
export async function runInGuest(script: string, options: GuestOptions = {}): Promise<GuestRun> {
  const test = path.basename(process.argv[1] ?? 'unknown');
  logBoot(`boot ${test}`);
  const first = await runInGuestOnce(script, options);
  if (!NESTED_UNDER_TCG || first.exit.reason !== 'triple-fault' || first.console.includes(INIT_MARKER)) return first;
  logBoot(`retry ${test} ${first.exit.detail}`);
  process.stdout.write(`# NESTED BOOT RETRY: the guest triple-faulted during boot, before its script ran (${first.exit.detail}); booting it once more\n`);
  logBoot(`boot ${test}`);
  return runInGuestOnce(script, options);
}

async function runInGuestOnce(script: string, options: GuestOptions): Promise<GuestRun> {
  const vm = MicroVm.create(guestSpec(script, options));
  const capture = new ConsoleCapture(vm);
  try {
    vm.start();
    const exit = await withTimeout(vm.waitExit(), BOOT_TIMEOUT_MS, 'guest did not finish', capture).catch((err: Error) => {
      throw withExitStats(err, vm);
    });
    await vm.destroy();
    // Log the console into the test output: evidence of what the guest really did.
    const text = capture.text.replace(/\r/g, '');
    process.stdout.write(`# --- guest console (${exit.reason}${exit.detail ? `: ${exit.detail}` : ''}) ---\n${text.replace(/^/gm, '# ')}\n`);
    const start = text.indexOf(INIT_MARKER);
    const end = text.lastIndexOf('stencil-guest: exit ');
    const output = start >= 0 && end > start ? text.slice(start + INIT_MARKER.length, end) : '';
    const status = end >= 0 ? Number(/stencil-guest: exit (\d+)/.exec(text.slice(end))?.[1]) : undefined;
    return { exit, console: text, output, status };
  } finally {
    await vm.destroy();
  }
}

/**
 * Fails unless the guest's script exited 0. The message names how the VM ended (a triple fault
 * mid-script, in words lib/fault-retry.ts recognises) and shows the script's output, or the
 * console's end when the script never reported.
 */
export function assertScriptSucceeded(run: GuestRun): void {
  if (run.status === 0) return;
  const status = run.status === undefined ? 'never reported its exit status' : `exited ${run.status}`;
  const shown = run.output || `(no script output; the console's end:)\n${run.console.split('\n').slice(-25).join('\n')}`;
  assert.fail(`the guest's script ${status}; the VM ended with ${describeExit(run.exit)}\n${shown}`);
}

/** A host file's identity (mode, owner, size, mtime, content hash): tests compare it before and after a guest tried to change it. */
export function fingerprint(file: string): string {
  try {
    const st = fs.lstatSync(file);
    const data = st.isFile() ? fs.readFileSync(file) : Buffer.alloc(0);
    return `${st.mode}:${st.uid}:${st.gid}:${st.size}:${st.mtimeMs}:${crypto.createHash('sha256').update(data).digest('hex')}`;
  } catch (err) {
    return `missing (${(err as NodeJS.ErrnoException).code})`;
  }
}
