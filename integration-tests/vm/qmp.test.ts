// QEMU's templating sequence with the real guest, through `stencil vm run --qmp` and socat: a
// template whose RAM is a shared file is stopped and its state (no RAM: x-ignore-shared) sent
// through `migrate exec:`; a clone maps the file read-only copy-on-write (--incoming defer,
// migrate-incoming), stays paused until `cont`, then ticks on from where the template stopped,
// without booting again, and the RAM file never changes.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { SocatQmp } from '../../shim/src/qmp/testing/socat-qmp.js';
import { repoRoot } from '../../shim/src/util/paths.js';
import { BOOT_TIMEOUT_MS, guestParams, MEMORY_DIR } from '../lib/guest.js';

const STENCIL = path.join(repoRoot(), 'bin', 'stencil');
const ticks = (text: string) => [...text.matchAll(/tick-(\d+)\r?\n/g)].map((m) => Number(m[1]));

function sha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = crypto.createHash('sha256');
    fs.createReadStream(file)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}

class VmProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  readonly child: ChildProcess;
  constructor(args: string[]) {
    this.child = spawn(process.execPath, [STENCIL, 'vm', 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (c: Buffer) => (this.stdout += c.toString('latin1')));
    this.child.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString('utf8')));
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }
  /**
   * Waits for a tick >= min on the console. A guest that never prints it is paused and fails with
   * its exit stats and registers, asked through its QMP session: they tell a stalled guest from one
   * spinning in the emulated host's page-fault storm, which lib/fault-retry.ts matches in these words.
   */
  async tickAtLeast(min: number, timeoutMs: number, qmp: SocatQmp): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = ticks(this.stdout).filter((t) => t >= min);
      if (found.length) return found[0];
      if (Date.now() > deadline) {
        // Paused first, so the stats carry each vCPU's registers: where the guest is stuck.
        await qmp.execute('stop').catch(() => undefined);
        const stats = await qmp.execute('x-query-exit-stats').then((r) => JSON.stringify(r.return ?? r.error), (e: Error) => `(none: ${e.message})`);
        throw new Error(`console never showed a tick >= ${min} within ${timeoutMs} ms; exit stats: ${stats}\nconsole:\n${this.stdout.slice(-2000)}\nstderr:\n${this.stderr}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

describe('QMP templating with the real guest', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-qmp-it-'));
  fs.mkdirSync(MEMORY_DIR, { recursive: true, mode: 0o700 });
  const ramFile = path.join(MEMORY_DIR, `qmp-template-${process.pid}.ram`);
  const processes: VmProcess[] = [];
  const sessions: SocatQmp[] = [];
  after(() => {
    for (const s of sessions) s.close();
    for (const p of processes) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(ramFile, { force: true });
  });
  const vm = (args: string[]) => {
    const p = new VmProcess(args);
    processes.push(p);
    return p;
  };
  const connect = async (socket: string) => {
    const s = await SocatQmp.connect(socket, 60_000);
    sessions.push(s);
    return s;
  };

  it('a clone of a stopped template waits for cont, then ticks on; the RAM file is unchanged', async () => {
    const state = path.join(dir, 'template.state');
    const templateSocket = path.join(dir, 'template.sock');
    const script = 'i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done';
    const template = vm([
      '--memory-path', ramFile, '--memory-share', 'on', '--qmp', `unix:${templateSocket},server,nowait`,
      '--cmdline', guestParams(script).join(' '),
    ]);
    const qmp = await connect(templateSocket);
    await template.tickAtLeast(3, BOOT_TIMEOUT_MS, qmp);
    await qmp.ok('stop');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const last = Math.max(...ticks(template.stdout));
    await qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await qmp.ok('migrate', { uri: `exec:cat>${state}` });
    assert.equal((await qmp.waitMigration(60_000)).status, 'completed');
    await qmp.ok('quit');
    assert.equal(await template.exited, 0, template.stderr);
    const ramHash = await sha256(ramFile);

    const cloneSocket = path.join(dir, 'clone.sock');
    const clone = vm([
      '--memory-path', ramFile, '--memory-share', 'off', '--memory-readonly', '--incoming', 'defer',
      '--qmp', `unix:${cloneSocket},server,nowait`,
    ]);
    const cq = await connect(cloneSocket);
    await cq.ok('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await cq.ok('migrate-incoming', { uri: `exec:cat ${state}` });
    assert.equal((await cq.waitMigration(60_000)).status, 'completed');
    assert.equal(((await cq.ok('query-status')) as { status: string }).status, 'paused');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.deepEqual(ticks(clone.stdout), [], 'the clone ran before cont');
    await cq.ok('cont');
    const first = await clone.tickAtLeast(0, 60_000, cq);
    assert.ok(first > last && first <= last + 2, `the clone's first tick is ${first}, the template stopped after ${last}`);
    await clone.tickAtLeast(first + 3, 60_000, cq);  // its timers keep firing
    assert.doesNotMatch(clone.stdout, /init reached|Linux version/, 'the clone booted again');
    await cq.ok('quit');
    assert.equal(await clone.exited, 0, clone.stderr);
    assert.equal(await sha256(ramFile), ramHash, 'the clone wrote to the template RAM file');
  });
});
