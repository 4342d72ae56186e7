import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import { createLogger } from '../util/log.js';
import { QmpError } from './protocol.js';
import { MAX_REQUEST_BYTES, QmpServer } from './server.js';
import { RecordingVm } from './testing/recording-vm.js';
import { parseMigrationUri, vmCommands } from './vm-commands.js';

const logger = createLogger({ level: 'error' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-qmp-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A client reading CRLF-separated JSON messages. */
class Client {
  private buffered = '';
  private readonly messages: unknown[] = [];
  private waiter?: () => void;
  constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.buffered += text;
      let end;
      while ((end = this.buffered.indexOf('\r\n')) >= 0) {
        this.messages.push(JSON.parse(this.buffered.slice(0, end)));
        this.buffered = this.buffered.slice(end + 2);
      }
      this.waiter?.();
    });
  }
  static async connect(socketPath: string): Promise<Client> {
    const socket = net.connect(socketPath);
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return new Client(socket);
  }
  async next(): Promise<Record<string, unknown>> {
    const deadline = Date.now() + 5000;
    while (this.messages.length === 0) {
      if (Date.now() > deadline) throw new Error('no QMP message within 5 s');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 100);
      });
    }
    return this.messages.shift() as Record<string, unknown>;
  }
  send(text: string): void {
    this.socket.write(text);
  }
  async call(execute: string, args?: object, id?: unknown): Promise<Record<string, unknown>> {
    this.send(JSON.stringify({ execute, ...(args ? { arguments: args } : {}), ...(id !== undefined ? { id } : {}) }));
    return this.next();
  }
  /** Greeting read and capabilities negotiated. */
  static async ready(socketPath: string): Promise<Client> {
    const client = await Client.connect(socketPath);
    const hello = await client.next();
    assert.ok(hello.QMP, `greeting: ${JSON.stringify(hello)}`);
    assert.deepEqual(await client.call('qmp_capabilities'), { return: {} });
    return client;
  }
}

describe('QMP server', () => {
  let server: QmpServer;
  let vm: RecordingVm;
  let socketPath: string;
  let n = 0;
  const clients: Client[] = [];
  const open = async () => {
    const c = await Client.ready(socketPath);
    clients.push(c);
    return c;
  };

  beforeEach(async () => {
    vm = new RecordingVm();
    socketPath = path.join(dir, `qmp-${n++}.sock`);
    server = new QmpServer({ commands: vmCommands(vm), logger });
    await server.listen(socketPath);
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await server.close();
  });

  it('greets with a QEMU-style version, socket 0600', async () => {
    assert.equal(fs.statSync(socketPath).mode & 0o777, 0o600);
    const c = await Client.connect(socketPath);
    clients.push(c);
    const hello = (await c.next()) as { QMP: { version: { qemu: { major: number } }; capabilities: unknown[] } };
    assert.equal(hello.QMP.version.qemu.major, 7);
    assert.deepEqual(hello.QMP.capabilities, []);
  });

  it('refuses commands before qmp_capabilities and a second negotiation after it', async () => {
    const c = await Client.connect(socketPath);
    clients.push(c);
    await c.next();
    assert.deepEqual(await c.call('query-status', undefined, 7), {
      error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" },
      id: 7,
    });
    assert.deepEqual(await c.call('qmp_capabilities'), { return: {} });
    assert.equal(((await c.call('qmp_capabilities')).error as { class: string }).class, 'CommandNotFound');
  });

  it('x-query-exit-stats returns the VMM counters, and a clear error before there is a VM', async () => {
    const c = await open();
    assert.deepEqual(await c.call('x-query-exit-stats'), {
      error: { class: 'GenericError', desc: 'no VM yet (waiting for an incoming migration)' },
    });
    vm.stats = { exitsByReason: { io: 3 }, topIoPorts: [{ port: 0x3f8, exits: 3 }], topMmio: [], setupPhasesMs: {}, firstConsoleMs: 5, kvmVcpuStats: { exits: 9 } };
    assert.deepEqual(await c.call('x-query-exit-stats'), { return: vm.stats });
  });

  it('stop/cont change the state and echo ids of any JSON type', async () => {
    const c = await open();
    assert.deepEqual(await c.call('query-status', undefined, 'a'), { return: { status: 'running', singlestep: false, running: true }, id: 'a' });
    assert.deepEqual(await c.call('stop', undefined, { n: 1 }), { return: {}, id: { n: 1 } });
    assert.deepEqual((await c.call('query-status')).return, { status: 'paused', singlestep: false, running: false });
    assert.deepEqual(await c.call('cont'), { return: {} });
    assert.deepEqual(vm.calls, ['stop', 'cont']);
  });

  it('inject-nmi reaches the VM; an argument it does not take is refused by name', async () => {
    const c = await open();
    assert.deepEqual(await c.call('inject-nmi'), { return: {} });
    assert.deepEqual(vm.calls, ['inject-nmi']);
    const bad = (await c.call('inject-nmi', { cpu: 1 })).error as { class: string; desc: string };
    assert.equal(bad.class, 'GenericError');
    assert.match(bad.desc, /cpu/);
    assert.deepEqual(vm.calls, ['inject-nmi']);
  });

  it('accepts requests split across writes and several in one write', async () => {
    const c = await open();
    c.send('{"execute": "st');
    await new Promise((r) => setTimeout(r, 50));
    c.send('op", "id": 1}{"execute":"query-status","id":2}\n{"execute":"cont","id":3}');
    assert.deepEqual(await c.next(), { return: {}, id: 1 });
    assert.equal(((await c.next()).return as { status: string }).status, 'paused');
    assert.deepEqual(await c.next(), { return: {}, id: 3 });
  });

  it('answers malformed input with GenericError and keeps serving', async () => {
    const c = await open();
    c.send('{"execute": }');
    const parseError = (await c.next()).error as { class: string; desc: string };
    assert.equal(parseError.class, 'GenericError');
    assert.match(parseError.desc, /JSON parse error/);
    for (const [input, desc] of [
      ['[1,2]', 'QMP input must be a JSON object'],
      ['{"arguments": {}}', "QMP input lacks member 'execute'"],
      ['{"execute": 5}', "QMP input member 'execute' must be a string"],
      ['{"execute": "stop", "bogus": 1}', "QMP input member 'bogus' is unexpected"],
      ['{"execute": "stop", "arguments": [1]}', "QMP input member 'arguments' must be an object"],
      ['{"execute": "stop", "arguments": {"x": 1}}', "Parameter 'x' is unexpected"],
      ['{"execute": "migrate", "arguments": {}}', "Parameter 'uri' is missing"],
      ['{"execute": "migrate", "arguments": {"uri": 3}}', "Invalid parameter type for 'uri', expected: string"],
      ['{"execute": "migrate", "arguments": {"uri": "ftp:x"}}', 'unknown migration protocol: ftp:x'],
      ['{"execute": "migrate", "arguments": {"uri": "file:relative"}}', "migration URI 'file:relative': file: needs an absolute directory"],
    ]) {
      c.send(input);
      assert.deepEqual((await c.next()).error, { class: 'GenericError', desc }, input);
    }
    assert.deepEqual(await c.call('frobnicate'), { error: { class: 'CommandNotFound', desc: 'The command frobnicate has not been found' } });
    assert.deepEqual(await c.call('query-status', undefined, 9), { return: { status: 'running', singlestep: false, running: true }, id: 9 });
    assert.deepEqual(vm.calls, [], 'no bad request reached the VM');
  });

  it('drops a request that grows past the size limit, then serves the next', async () => {
    const c = await open();
    c.send(`{"execute": "${'x'.repeat(MAX_REQUEST_BYTES + 10)}`);
    assert.match(((await c.next()).error as { desc: string }).desc, /longer than/);
    assert.deepEqual((await c.call('query-status')).return, { status: 'running', singlestep: false, running: true });
  });

  it('migration: capabilities, migrate with them, query-migrate, cancel', async () => {
    const c = await open();
    assert.deepEqual(await c.call('query-migrate'), { return: {} });
    assert.deepEqual(await c.call('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }), { return: {} });
    assert.deepEqual((await c.call('query-migrate-capabilities')).return, [
      { capability: 'x-ignore-shared', state: true },
      { capability: 'auto-converge', state: false },
    ]);
    const bad = await c.call('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-ram', state: true }] });
    assert.deepEqual(bad.error, { class: 'GenericError', desc: "Parameter 'capability' does not accept value 'postcopy-ram'" });
    assert.deepEqual(await c.call('migrate', { uri: 'exec:cat>/tmp/state' }), { return: {} });
    assert.deepEqual(vm.lastUri, { kind: 'exec', command: 'cat>/tmp/state' });
    assert.deepEqual([...(vm.lastCapabilities ?? [])], ['x-ignore-shared']);
    assert.deepEqual(await c.call('query-migrate'), { return: { status: 'active' } });
    assert.match(((await c.call('migrate', { uri: 'file:/tmp/x' })).error as { desc: string }).desc, /in progress/);
    assert.match(((await c.call('migrate-set-capabilities', { capabilities: [] })).error as { desc: string }).desc, /in progress/);
    assert.deepEqual(await c.call('migrate_cancel'), { return: {} });
    assert.deepEqual(await c.call('query-migrate'), { return: { status: 'cancelled' } });
  });

  it('migrate-incoming only for a VM waiting for one, and only once', async () => {
    const c = await open();
    assert.deepEqual((await c.call('migrate-incoming', { uri: 'file:/snap' })).error, {
      class: 'GenericError',
      desc: "'-incoming' was not specified on the command line",
    });
    vm.state = 'inmigrate';
    assert.equal(((await c.call('cont')).error as { desc: string }).desc, 'Guest is waiting for an incoming migration');
    assert.deepEqual(await c.call('migrate-incoming', { uri: 'file:/snap' }), { return: {} });
    assert.deepEqual(vm.lastUri, { kind: 'file', dir: '/snap' });
    assert.match(((await c.call('migrate-incoming', { uri: 'file:/snap' })).error as { desc: string }).desc, /already been started/);
  });

  it('events reach every negotiated client, not one still negotiating', async () => {
    const a = await open();
    const b = await open();
    const pending = await Client.connect(socketPath);
    clients.push(pending);
    await pending.next();
    server.emit('STOP');
    server.emit('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
    for (const c of [a, b]) {
      const stop = (await c.next()) as { event: string; timestamp: { seconds: number; microseconds: number } };
      assert.equal(stop.event, 'STOP');
      assert.ok(Math.abs(stop.timestamp.seconds - Date.now() / 1000) < 5 && stop.timestamp.microseconds < 1e6);
      assert.deepEqual((await c.next()).data, { guest: false, reason: 'host-qmp-quit' });
    }
    assert.deepEqual(await pending.call('qmp_capabilities'), { return: {} }, 'no event was queued before negotiation');
  });

  it('errors thrown by the VM become GenericError replies', async () => {
    vm.stop = async () => {
      throw new Error('vCPU 0 did not park within 5 s');
    };
    const c = await open();
    assert.deepEqual(await c.call('stop'), { error: { class: 'GenericError', desc: 'vCPU 0 did not park within 5 s' } });
  });

  it('replaces a stale socket file, refuses a live socket and a non-socket path', async () => {
    const stale = path.join(dir, 'stale.sock');
    const old = net.createServer();
    await new Promise<void>((r) => old.listen(stale, r));
    await assert.rejects(new QmpServer({ commands: {}, logger }).listen(stale), /in use by a running process/);
    await new Promise<void>((r) => old.close(() => r()));
    // A process killed while listening leaves its socket file behind.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`]);
    await new Promise((r) => child.stdout.once('data', r));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.ok(fs.existsSync(stale));
    const again = new QmpServer({ commands: {}, logger });
    await again.listen(stale);
    await again.close();
    const plain = path.join(dir, 'plain-file');
    fs.writeFileSync(plain, '');
    await assert.rejects(new QmpServer({ commands: {}, logger }).listen(plain), /exists and is not a socket/);
  });
});

describe('parseMigrationUri', () => {
  it('parses the four schemes and refuses the rest', () => {
    assert.deepEqual(parseMigrationUri('file:/var/snap'), { kind: 'file', dir: '/var/snap' });
    assert.deepEqual(parseMigrationUri('exec:cat > s'), { kind: 'exec', command: 'cat > s' });
    assert.deepEqual(parseMigrationUri('unix:/run/m.sock'), { kind: 'unix', path: '/run/m.sock' });
    assert.deepEqual(parseMigrationUri('tcp:127.0.0.1:4444'), { kind: 'tcp', host: '127.0.0.1', port: 4444 });
    assert.deepEqual(parseMigrationUri('tcp:[::1]:4444'), { kind: 'tcp', host: '::1', port: 4444 });
    assert.deepEqual(parseMigrationUri('tcp::4444'), { kind: 'tcp', host: '0.0.0.0', port: 4444 });
    for (const bad of ['tcp:host', 'tcp:h:0', 'tcp:h:70000', 'exec:', 'unix:', 'file:', 'rdma:x', 'nocolon']) {
      assert.throws(() => parseMigrationUri(bad), QmpError, bad);
    }
  });
});
