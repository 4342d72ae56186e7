// `stencil vm run --qmp` driven through socat, as users drive QEMU and StratoVirt: StratoVirt's
// snapshot sequence (stop, migrate file:DIR, restore with --incoming file:DIR) and QEMU's
// templating sequence (a RAM file shared by the template, x-ignore-shared, migrate exec:, a clone
// mapping the file read-only copy-on-write with --incoming defer + migrate-incoming, then cont),
// plus bad input. The guest is a tiny kernel printing a counter it keeps in RAM, so a restored
// VM shows it continues from the saved state rather than starting over.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { tinyElfKernel } from '../hypervisor/testing/tiny-kernel.js';
import { SocatQmp } from '../qmp/testing/socat-qmp.js';
import { repoRoot } from '../util/paths.js';

const STENCIL = path.join(repoRoot(), 'bin', 'stencil');

// mov ebx, 0x200000; loop: a delay, inc qword [rbx], print "t=%08x\n" of the counter on COM1, repeat.
const TICKING_COUNTER = [
  0xbb, 0x00, 0x00, 0x20, 0x00, 0xb9, 0x00, 0x00, 0x02, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0x48, 0xff, 0x03, 0x8b, 0x33, 0x66,
  0xba, 0xf8, 0x03, 0xb0, 0x74, 0xee, 0xb0, 0x3d, 0xee, 0xb9, 0x08, 0x00, 0x00, 0x00, 0xc1, 0xc6, 0x04, 0x89, 0xf0, 0x83,
  0xe0, 0x0f, 0x3c, 0x0a, 0x72, 0x02, 0x04, 0x27, 0x04, 0x30, 0xee, 0xff, 0xc9, 0x75, 0xeb, 0xb0, 0x0a, 0xee, 0xeb, 0xc9,
];

const ticks = (text: string) => [...text.matchAll(/t=([0-9a-f]{8})\n/g)].map((m) => parseInt(m[1], 16));
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
/** A TCP port on loopback nobody listens on right now. */
const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });

/** A `stencil vm run` child process with its console collected. */
class VmProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [STENCIL, 'vm', 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (c: Buffer) => (this.stdout += c.toString('latin1')));
    this.child.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString('utf8')));
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** Waits until the console shows a tick above `min`; returns it. */
  async tickAbove(min: number, timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const above = ticks(this.stdout).filter((t) => t > min);
      if (above.length) return above[0];
      if (Date.now() > deadline) throw new Error(`no tick above ${min} within ${timeoutMs} ms; stdout:\n${this.stdout.slice(-500)}\nstderr:\n${this.stderr}`);
      await sleep(20);
    }
  }

  lastTick(): number {
    return Math.max(-1, ...ticks(this.stdout));
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

describe('stencil vm run --qmp (through socat)', () => {
  let dir: string;
  let shm: string;
  let kernel: string;
  let initrd: string;
  const vms: VmProcess[] = [];
  const sessions: SocatQmp[] = [];
  const vm = (args: string[]) => {
    const v = new VmProcess(args);
    vms.push(v);
    return v;
  };
  const connect = async (socket: string) => {
    const s = await SocatQmp.connect(socket);
    sessions.push(s);
    return s;
  };
  /** `quit` on each session, in order; each VM process then exits 0. */
  const quitAll = async (pairs: Array<[SocatQmp, VmProcess]>) => {
    for (const [session, process] of pairs) {
      await session.ok('quit');
      assert.equal(await process.exited, 0, process.stderr);
    }
  };

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-qmp-'));
    shm = fs.mkdtempSync('/dev/shm/stencil-qmp-');
    kernel = path.join(dir, 'vmlinux');
    fs.writeFileSync(kernel, tinyElfKernel(TICKING_COUNTER));
    initrd = path.join(dir, 'initrd');
    fs.writeFileSync(initrd, 'unused by this kernel');
  });
  after(() => {
    for (const s of sessions) s.close();
    for (const v of vms) v.kill();
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(shm, { recursive: true, force: true });
  });

  const boot = (socket: string, extra: string[] = []) =>
    vm(['--kernel', kernel, '--initrd', initrd, '--memory', '64M', '--memory-dir', shm, '--qmp', `unix:${socket},server,nowait`, ...extra]);
  /** A booted source that has ticked past `ticks` and a destination waiting on unix:, both with QMP. */
  const livePair = async (name: string, ticks: number) => {
    const sourceSocket = path.join(dir, `${name}-source.sock`);
    const source = boot(sourceSocket);
    const sq = await connect(sourceSocket);
    await source.tickAbove(ticks);
    const streamSocket = path.join(dir, `${name}.migrate`);
    const destSocket = path.join(dir, `${name}-dest.sock`);
    const dest = vm(['--incoming', `unix:${streamSocket}`, '--memory-dir', shm, '--qmp', `unix:${destSocket},server,nowait`]);
    const dq = await connect(destSocket);
    return { source, sq, dest, dq, streamSocket };
  };

  it("runs StratoVirt's snapshot sequence: stop, migrate file:DIR, query-migrate, restore with --incoming file:DIR", async () => {
    const socket = path.join(dir, 'source.sock');
    const source = boot(socket);
    const qmp = await connect(socket);
    assert.deepEqual((qmp.greeting.QMP as { capabilities: unknown[] }).capabilities, []);
    await source.tickAbove(2);
    assert.deepEqual(await qmp.ok('query-status'), { status: 'running', singlestep: false, running: true });
    await qmp.ok('stop');
    await qmp.waitEvent('STOP');
    await sleep(100);  // console bytes already written reach us
    const stoppedAt = source.lastTick();

    const snapshot = path.join(dir, 'snapshot');  // on disk, not tmpfs: RAM is copied, sparsely
    await qmp.ok('migrate', { uri: `file:${snapshot}` });
    const info = await qmp.waitMigration();
    assert.equal(info.status, 'completed', JSON.stringify(info));
    assert.ok((info.ram as { transferred: number }).transferred > 0);
    assert.deepEqual(fs.readdirSync(snapshot).sort(), ['config', 'memory', 'state']);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.partial')), [], 'a staging directory was left behind');
    const memory = fs.statSync(path.join(snapshot, 'memory'));
    assert.equal(memory.size, 64 * 2 ** 20);
    assert.ok(memory.blocks * 512 < 8 * 2 ** 20, `the RAM copy is not sparse: ${memory.blocks * 512} bytes on disk`);
    assert.equal(((await qmp.ok('query-status')) as { status: string }).status, 'postmigrate');

    // A second snapshot into a non-empty directory is refused, leaving the first intact.
    await qmp.ok('migrate', { uri: `file:${snapshot}` });
    const refused = await qmp.waitMigration();
    assert.equal(refused.status, 'failed');
    assert.match(String(refused['error-desc']), /not empty/);
    assert.deepEqual(fs.readdirSync(snapshot).sort(), ['config', 'memory', 'state']);

    // The source is not a template: it runs on.
    await qmp.ok('cont');
    await qmp.waitEvent('RESUME');
    await source.tickAbove(stoppedAt + 1);

    const restoredSocket = path.join(dir, 'restored.sock');
    const restored = vm(['--incoming', `file:${snapshot}`, '--qmp', `unix:${restoredSocket},server,nowait`]);
    const first = await restored.tickAbove(-1);
    assert.ok(first > stoppedAt && first <= stoppedAt + 2, `the restored VM printed ${first} first, the source stopped at ${stoppedAt}`);
    await restored.tickAbove(first + 2);
    const restoredQmp = await connect(restoredSocket);
    assert.equal(((await restoredQmp.ok('query-status')) as { status: string }).status, 'running');

    for (const [session, process, sock] of [
      [qmp, source, socket],
      [restoredQmp, restored, restoredSocket],
    ] as const) {
      await session.ok('quit');
      const shutdown = await session.waitEvent('SHUTDOWN');
      assert.deepEqual(shutdown.data, { guest: false, reason: 'host-qmp-quit' });
      assert.equal(await process.exited, 0, process.stderr);
      assert.ok(!fs.existsSync(sock), `${sock} was left behind`);
    }
  });

  it("runs QEMU's templating sequence: shared RAM file, x-ignore-shared, migrate exec:, a read-only copy-on-write clone", async () => {
    const ramFile = path.join(shm, 'template.ram');
    const state = path.join(dir, 'template.state');
    const socket = path.join(dir, 'template.sock');
    const template = boot(socket, ['--memory-path', ramFile, '--memory-share', 'on']);
    const qmp = await connect(socket);
    await template.tickAbove(2);
    await qmp.ok('stop');
    await sleep(100);
    const stoppedAt = template.lastTick();
    await qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });

    // One migration at a time; a cancelled one leaves nothing behind and the VM as it was.
    await qmp.ok('migrate', { uri: `exec:sleep 5; cat >${state}` });
    const busy = await qmp.execute('migrate', { uri: `exec:cat >${state}` });
    assert.equal(busy.error?.class, 'GenericError');
    assert.match(busy.error!.desc, /migration process in progress/);
    await qmp.ok('migrate_cancel');
    assert.equal((await qmp.waitMigration()).status, 'cancelled');
    assert.ok(!fs.existsSync(state));
    assert.equal(((await qmp.ok('query-status')) as { status: string }).status, 'paused');

    await qmp.ok('migrate', { uri: `exec:cat>${state}` });
    const info = await qmp.waitMigration();
    assert.equal(info.status, 'completed', JSON.stringify(info));
    const streamBytes = fs.statSync(state).size;
    assert.ok(streamBytes > 0 && streamBytes < 1 << 20, `the stream has ${streamBytes} bytes: RAM must not be in it`);
    await qmp.ok('quit');
    assert.equal(await template.exited, 0, template.stderr);
    const ramHash = sha256(ramFile);

    const cloneSocket = path.join(dir, 'clone.sock');
    const clone = vm([
      '--memory-path', ramFile, '--memory-share', 'off', '--memory-readonly', '--incoming', 'defer', '--qmp', `unix:${cloneSocket},server,nowait`,
    ]);
    const cq = await connect(cloneSocket);
    assert.equal(((await cq.ok('query-status')) as { status: string }).status, 'inmigrate');
    const early = await cq.execute('cont');
    assert.match(early.error?.desc ?? '', /waiting for an incoming migration/);
    const noCapability = await cq.execute('migrate-incoming', { uri: `exec:cat ${state}` });
    assert.match(noCapability.error?.desc ?? '', /x-ignore-shared/);
    await cq.ok('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });

    // A truncated stream fails the load with a clear error; the clone keeps waiting and may retry.
    await cq.ok('migrate-incoming', { uri: `exec:head -c 200 ${state}` });
    const truncated = await cq.waitMigration();
    assert.equal(truncated.status, 'failed');
    assert.match(String(truncated['error-desc']), /migration stream: (checksum mismatch|truncated)/);
    assert.equal(((await cq.ok('query-status')) as { status: string }).status, 'inmigrate');

    await cq.ok('migrate-incoming', { uri: `exec:cat ${state}` });
    assert.equal((await cq.waitMigration()).status, 'completed');
    assert.equal(((await cq.ok('query-status')) as { status: string }).status, 'paused');
    await sleep(300);
    assert.equal(ticks(clone.stdout).length, 0, 'a clone of a stopped template ran before cont');
    await cq.ok('cont');
    await cq.waitEvent('RESUME');
    const first = await clone.tickAbove(-1);
    assert.ok(first > stoppedAt && first <= stoppedAt + 2, `the clone printed ${first} first, the template stopped at ${stoppedAt}`);
    await clone.tickAbove(first + 2);
    await cq.ok('quit');
    assert.equal(await clone.exited, 0, clone.stderr);
    assert.equal(sha256(ramFile), ramHash, 'the clone wrote to the template RAM file');

    // A clone asking for another vCPU count is refused, naming both.
    const wrongSocket = path.join(dir, 'wrong.sock');
    const wrong = vm(['--vcpus', '2', '--memory-path', ramFile, '--memory-readonly', '--incoming', 'defer', '--qmp', `unix:${wrongSocket},server,nowait`]);
    const wq = await connect(wrongSocket);
    await wq.ok('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await wq.ok('migrate-incoming', { uri: `exec:cat ${state}` });
    const mismatch = await wq.waitMigration();
    assert.equal(mismatch.status, 'failed');
    assert.match(String(mismatch['error-desc']), /vCPU count 1, the restoring VM asks for 2/);
    await wq.ok('quit');
    assert.equal(await wrong.exited, 0, wrong.stderr);
  });

  it("moves a running VM live over unix: and then tcp: with StratoVirt's commands; the count goes on", async () => {
    const ramFiles = () => fs.readdirSync(shm).filter((f) => f.endsWith('.ram'));
    const ramBefore = ramFiles();
    const { source, sq, dest, dq, streamSocket } = await livePair('live', 2);
    assert.equal(((await dq.ok('query-status')) as { status: string }).status, 'inmigrate');
    await sq.ok('migrate', { uri: `unix:${streamSocket}` });
    const info = await sq.waitMigration();
    assert.equal(info.status, 'completed', JSON.stringify(info));
    const ram = info.ram as Record<string, number>;
    assert.equal(ram.total, 64 * 2 ** 20);
    assert.ok(ram.transferred > 0 && ram.transferred < 8 * 2 ** 20, JSON.stringify(info));
    assert.equal(typeof info.downtime, 'number');
    // The downtime's split: each phase measured, together within it (each to the microsecond, the downtime to 1 ms).
    const phases = info['x-downtime-phases'] as Record<string, number>;
    assert.deepEqual(Object.keys(phases), ['pause', 'final-ram', 'save-state', 'destination'], JSON.stringify(info));
    assert.ok(Object.values(phases).every((v) => v >= 0), JSON.stringify(phases));
    assert.ok(phases.destination > 0, `the destination took no time to start the VM: ${JSON.stringify(phases)}`);
    const sum = Object.values(phases).reduce((a, b) => a + b, 0);
    assert.ok(sum <= (info.downtime as number) + 1.5, `phases ${sum} ms, downtime ${String(info.downtime)} ms`);
    assert.equal(((await sq.ok('query-status')) as { status: string }).status, 'postmigrate');
    assert.deepEqual(
      sq.events.filter((e) => e.event === 'MIGRATION').map((e) => e.data?.status),
      ['setup', 'active', 'completed'],
    );
    await sleep(100);
    const stoppedAt = source.lastTick();
    const first = await dest.tickAbove(-1);
    assert.ok(first > stoppedAt - 2 && first <= stoppedAt + 2, `the destination printed ${first} first, the source stopped at ${stoppedAt}`);
    await dest.tickAbove(first + 2);
    assert.equal(source.lastTick(), stoppedAt, 'the source ran on after the migration');
    assert.equal(((await dq.ok('query-status')) as { status: string }).status, 'running');
    assert.equal(((await dq.ok('query-migrate')) as { status: string }).status, 'completed');
    assert.ok(!fs.existsSync(streamSocket), 'the incoming socket was left behind');

    // On to a third process over tcp, without QMP there (vCPUs and size come from the stream).
    const port = await freePort();
    const third = vm(['--incoming', `tcp:127.0.0.1:${port}`, '--memory-dir', shm]);
    await sleep(300);
    await dq.ok('migrate-set-parameters', { 'downtime-limit': 100 });
    assert.equal(((await dq.ok('query-migrate-parameters')) as Record<string, number>)['downtime-limit'], 100);
    await dq.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
    assert.equal((await dq.waitMigration()).status, 'completed');
    await sleep(100);
    const secondStop = dest.lastTick();
    assert.ok((await third.tickAbove(secondStop)) <= secondStop + 3);

    await quitAll([
      [sq, source],
      [dq, dest],
    ]);
    third.kill('SIGTERM');
    await third.exited;
    assert.deepEqual(ramFiles(), ramBefore, 'RAM files were left behind');
  });

  it('a `stop` on a destination still waiting keeps the VM that arrives paused until `cont` (QEMU autostart)', async () => {
    const { source, sq, dest, dq, streamSocket } = await livePair('autostart', 1);
    await dq.ok('stop');
    await sq.ok('migrate', { uri: `unix:${streamSocket}` });
    assert.equal((await sq.waitMigration()).status, 'completed');
    let status = 'inmigrate';
    for (const deadline = Date.now() + 10_000; status === 'inmigrate' && Date.now() < deadline; await sleep(50)) {
      status = ((await dq.ok('query-status')) as { status: string }).status;
    }
    assert.equal(status, 'paused');
    await sleep(300);
    assert.equal(dest.lastTick(), -1, 'the destination ran without cont');
    const stoppedAt = source.lastTick();
    await dq.ok('cont');
    await dq.waitEvent('RESUME');
    const first = await dest.tickAbove(-1);
    assert.ok(first > stoppedAt - 2 && first <= stoppedAt + 2, `the destination printed ${first} first, the source stopped at ${stoppedAt}`);
    await quitAll([
      [sq, source],
      [dq, dest],
    ]);
  });

  it('cancels a live migration (the source runs on), and a destination refuses a VM of another size', async () => {
    const sourceSocket = path.join(dir, 'cancel-source.sock');
    const source = boot(sourceSocket);
    const sq = await connect(sourceSocket);
    await source.tickAbove(1);

    const refusing = vm(['--incoming', `unix:${path.join(dir, 'refuse.migrate')}`, '--memory', '128M', '--memory-dir', shm]);
    await sleep(300);
    await sq.ok('migrate', { uri: `unix:${path.join(dir, 'refuse.migrate')}` });
    const refused = await sq.waitMigration();
    assert.equal(refused.status, 'failed');
    assert.match(String(refused['error-desc']), /refused the migration: memory size differs: the stream's VM has 67108864 bytes, this destination was asked for 134217728/);
    assert.equal(await refusing.exited, 1);
    assert.match(refusing.stderr, /incoming migration failed: refused the incoming VM: memory size differs/);
    assert.equal(((await sq.ok('query-status')) as { status: string }).status, 'running');

    const slow = vm(['--incoming', `unix:${path.join(dir, 'slow.migrate')}`, '--memory-dir', shm]);
    await sleep(300);
    await sq.ok('migrate-set-parameters', { 'max-bandwidth': 16 * 1024 });
    await sq.ok('migrate', { uri: `unix:${path.join(dir, 'slow.migrate')}` });
    await sleep(500);
    assert.equal(((await sq.ok('query-migrate')) as { status: string }).status, 'active');
    await sq.ok('migrate_cancel');
    assert.equal((await sq.waitMigration()).status, 'cancelled');
    const after = source.lastTick();
    await source.tickAbove(after + 1);
    assert.equal(await slow.exited, 1);
    assert.match(slow.stderr, /incoming migration failed: .*closed the connection/);
    await sq.ok('quit');
    assert.equal(await source.exited, 0, source.stderr);
  });

  it('answers bad input with QMP errors and keeps serving', async () => {
    const socket = path.join(dir, 'bad.sock');
    const v = boot(socket);
    const qmp = await connect(socket);
    const cases: Array<[string | object, string, RegExp]> = [
      [{ execute: 'no-such-command' }, 'CommandNotFound', /no-such-command has not been found/],
      [{ execute: 'migrate', arguments: { uri: 5 } }, 'GenericError', /Invalid parameter type for 'uri', expected: string/],
      [{ execute: 'migrate', arguments: {} }, 'GenericError', /Parameter 'uri' is missing/],
      [{ execute: 'migrate', arguments: { uri: 'tcp:host' } }, 'GenericError', /expected tcp:HOST:PORT/],
      [{ execute: 'migrate-set-parameters', arguments: { 'downtime-limit': -1 } }, 'GenericError', /'downtime-limit' expects an integer in 0..2000000/],
      [{ execute: 'migrate-set-parameters', arguments: { 'max-postcopy-bandwidth': 1 } }, 'GenericError', /'max-postcopy-bandwidth' is unexpected/],
      [{ execute: 'migrate', arguments: { uri: 'exec:cat >/dev/null' } }, 'GenericError', /x-ignore-shared/],
      [{ execute: 'migrate', arguments: { uri: 'file:relative' } }, 'GenericError', /absolute directory/],
      [{ execute: 'migrate-incoming', arguments: { uri: 'exec:cat /dev/null' } }, 'GenericError', /'-incoming' was not specified/],
      [{ execute: 'migrate-set-capabilities', arguments: { capabilities: [{ capability: 'postcopy-ram', state: true }] } }, 'GenericError', /does not accept value 'postcopy-ram'/],
      ['{"execute": }', 'GenericError', /JSON parse error/],
      ['[1, 2]', 'GenericError', /must be a JSON object/],
    ];
    for (const [input, errorClass, desc] of cases) {
      const reply = await qmp.send(typeof input === 'string' ? input : JSON.stringify(input));
      assert.equal(reply.error?.class, errorClass, `${JSON.stringify(input)} -> ${JSON.stringify(reply)}`);
      assert.match(reply.error!.desc, desc);
    }
    assert.equal(((await qmp.ok('query-status')) as { status: string }).status, 'running');
    await qmp.ok('quit');
    assert.equal(await v.exited, 0, v.stderr);
  });

  it('refuses flag combinations QEMU would not mean, before creating anything', async () => {
    const ram = path.join(shm, 'refused.ram');
    const cases: Array<[string[], RegExp]> = [
      [['--memory-path', ram], /--memory-share off maps an existing file copy-on-write/],
      [['--memory-path', ram, '--memory-share', 'on', '--memory-readonly'], /no writable RAM/],
      [['--memory-share', 'on'], /need --memory-path/],
      [['--incoming', 'defer'], /--incoming defer needs --qmp/],
      [['--incoming', 'rdma:0:4444'], /expected file:\/ABSOLUTE\/DIR, tcp:HOST:PORT, unix:PATH or defer/],
      [['--incoming', 'tcp:nohost'], /--incoming tcp:nohost: .*expected tcp:HOST:PORT/],
      [['--qmp', 'unix:/tmp/x.sock,server'], /nowait/],
    ];
    for (const [args, message] of cases) {
      const v = vm(['--kernel', kernel, '--initrd', initrd, '--memory', '64M', '--memory-dir', shm, ...args]);
      assert.equal(await v.exited, 1, `${args.join(' ')}: ${v.stderr}`);
      assert.match(v.stderr, message);
    }
    // A boot that fails after creating the RAM file (no such kernel) does not leave it behind.
    const failed = vm(['--kernel', path.join(dir, 'missing'), '--initrd', initrd, '--memory', '64M', '--memory-path', ram, '--memory-share', 'on']);
    assert.equal(await failed.exited, 1, failed.stderr);
    assert.match(failed.stderr, /missing cannot be opened/);
    assert.ok(!fs.existsSync(ram));
  });
});
