// VMM child processes for the benchmarks that run QEMU (and `stencil vm run`) as whole processes
// beside Stencil: the bzImage both boot, the output collected (stdout also as timestamped chunks,
// for timing the guest's console lines as they arrive), waits on a pattern, and a kill that
// waits for the exit and removes the process's sockets.
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { repoRoot } from '../../shim/src/util/paths.js';
import { BOOT_TIMEOUT_MS, withTimeout } from './guest.js';

/** The built guest's bzImage (QEMU's microvm cannot boot the vmlinux: the kernel has no PVH). */
export function guestBzImage(): string {
  const { bzImage } = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'build', 'guest.json'), 'utf8')) as { bzImage?: string };
  if (!bzImage) throw new Error('build/guest.json has no bzImage (run make guest)');
  return bzImage;
}

/** Collects a child's stdout+stderr; resolves waiters on a pattern. */
export class ProcessOutput {
  text = '';
  /** stdout alone, chunk by chunk, with performance.now() at arrival. */
  readonly stdout: Array<{ at: number; text: string }> = [];
  private waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];
  constructor(child: ChildProcessByStdio<null, Readable, Readable>) {
    const on = (d: Buffer, stdout: boolean) => {
      const text = d.toString('latin1');
      if (stdout) this.stdout.push({ at: performance.now(), text });
      this.text += text;
      this.waiters = this.waiters.filter((w) => {
        const m = this.text.match(w.re);
        if (m) w.resolve(m);
        return !m;
      });
    };
    child.stdout.on('data', (d: Buffer) => on(d, true));
    child.stderr.on('data', (d: Buffer) => on(d, false));
  }
  waitFor(re: RegExp, exited: Promise<string>, what: string, timeoutMs = BOOT_TIMEOUT_MS): Promise<RegExpMatchArray> {
    const m = this.text.match(re);
    if (m) return Promise.resolve(m);
    const found = new Promise<RegExpMatchArray>((resolve) => this.waiters.push({ re, resolve }));
    const died = exited.then((how) => {
      throw new Error(`${what}: the process exited (${how}) first; output:\n${this.text.slice(-2000)}`);
    });
    // The output in the message is the output when the wait times out, not when it began.
    return withTimeout(Promise.race([found, died]), timeoutMs, `${what}: ${re} never appeared`).catch((err: Error) => {
      throw new Error(`${err.message}; output:\n${this.text.slice(-2000)}`, { cause: err });
    });
  }
}

export class VmmProcess {
  readonly child: ChildProcessByStdio<null, Readable, Readable>;
  readonly out: ProcessOutput;
  /** Resolves with the exit code or signal. */
  readonly exited: Promise<string>;

  /** Spawns `command`; `sockets` (removed first and after the kill) are paths the process creates. */
  constructor(command: string, args: string[], private readonly sockets: string[] = []) {
    for (const s of sockets) fs.rmSync(s, { force: true });
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise<string>((resolve) => this.child.once('exit', (code, signal) => resolve(String(signal ?? code))));
    this.child.once('error', () => undefined);  // reported through `exited`
    this.out = new ProcessOutput(this.child);
  }

  waitFor(re: RegExp, what: string, timeoutMs?: number): Promise<RegExpMatchArray> {
    return this.out.waitFor(re, this.exited, what, timeoutMs);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.running) this.child.kill(signal);
    await this.exited;
    for (const s of this.sockets) fs.rmSync(s, { force: true });
  }
}
