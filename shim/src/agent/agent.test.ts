// The guest agent binary, run on this host over --unix (no VM), driven by AgentClient and by
// hand-made frames. Container tests need root, crun and busybox-static; on a host with the
// legacy/hybrid cgroup layout the agent runs in a private mount namespace with cgroup2 mounted
// at /sys/fs/cgroup, as in the guest. Where crun cannot run containers here they are skipped
// (with the reason), the protocol tests still run.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { repoRoot } from '../util/paths.js';
import { AgentClient } from './client.js';
import { AgentCallError, AgentConnectionError, AgentTimeoutError } from './errors.js';
import { encodeFrame, type Frame, FrameDecoder, FrameError, FrameKind, MAX_FRAME_PAYLOAD } from './framing.js';
import { agentTypes, decodeMessage, encodeMessage } from './protocol.js';
import { haveStaticBusybox, makeBusyboxRootfs, ociProcess, ociSpec } from './testing.js';
import { connectUnix, connectVsock, VsockConnectError } from './vsock.js';

const isRoot = process.getuid?.() === 0;

function agentBinary(): string {
  if (process.env.STENCIL_AGENT_BIN) return process.env.STENCIL_AGENT_BIN;
  // Cached by its input key: instant after the first build.
  return execFileSync(path.join(repoRoot(), 'guest/agent/build.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

interface RunningAgent {
  socket: string;
  dir: string;
  proc: ChildProcess;
  log: () => string;
  client: (timeoutMs?: number) => Promise<AgentClient>;
  stop: () => Promise<void>;
}

// In the private namespace: cgroup2 at /sys/fs/cgroup (like the guest), then the agent.
const ISOLATE = `
if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]; then
  umount -l /sys/fs/cgroup 2>/dev/null
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 97
fi
exec "$@"`;

async function startAgent(opts: { isolated?: boolean; extraArgs?: string[] } = {}): Promise<RunningAgent> {
  const bin = agentBinary();
  const dir = fs.mkdtempSync('/tmp/stencil-agent-test-');
  const socket = path.join(dir, 'agent.sock');
  const args = ['--unix', socket, '--state-dir', path.join(dir, 'state'), '--log-level', 'debug', ...(opts.extraArgs ?? [])];
  const proc = opts.isolated
    ? spawn('unshare', ['--mount', '--uts', '--propagation', 'private', 'sh', '-c', ISOLATE, 'agent', bin, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    : spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let logText = '';
  proc.stdout!.on('data', (d: Buffer) => (logText += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (logText += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      (await connectUnix(socket, 1000)).destroy();
      break;
    } catch {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`the agent did not start (exit ${proc.exitCode}):\n${logText}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    socket,
    dir,
    proc,
    log: () => logText,
    client: (timeoutMs = 30_000) => AgentClient.connect({ connect: () => connectUnix(socket), timeoutMs }),
    stop: async () => {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
        if (proc.exitCode === null) proc.kill('SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A raw framed connection, for malformed-input tests. */
class RawConn {
  private decoder = new FrameDecoder();
  private frames: Frame[] = [];
  private waiters: Array<() => void> = [];
  closed = false;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.frames.push(...this.decoder.push(chunk));
      this.waiters.splice(0).forEach((w) => w());
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiters.splice(0).forEach((w) => w());
    });
    socket.on('error', () => {});
  }
  static async open(socketPath: string): Promise<RawConn> {
    return new RawConn(await connectUnix(socketPath));
  }
  send(kind: number, payload: Uint8Array = Buffer.alloc(0)): void {
    this.socket.write(encodeFrame(kind, payload));
  }
  async next(timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('no frame');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return this.frames.shift()!;
  }
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('still open');
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

const T = () => agentTypes();
type Reply = { version: number; error: { code: string; message: string } | null; agentVersion: string };
type Resp = { id: string; error: { code: string; message: string } | null } & Record<string, unknown>;
const hello = (role: number, containerId = '', execId = '') =>
  encodeMessage(T().Hello, { version: 1, role, containerId, execId });
const request = (id: number, call: Record<string, unknown>) => encodeMessage(T().Request, { id, ...call });

function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

async function rejectsWith(p: Promise<unknown>, check: (err: AgentCallError) => void): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AgentCallError, `expected an AgentCallError, got ${String(err)}`);
    check(err);
    return true;
  });
}

describe('frame decoder', () => {
  it('reassembles frames split at every byte and joined in one chunk', () => {
    const frames = [encodeFrame(FrameKind.Data, Buffer.from('hello')), encodeFrame(FrameKind.Eof), encodeFrame(FrameKind.Data, Buffer.alloc(70_000, 7))];
    const all = Buffer.concat(frames);
    const byByte = new FrameDecoder();
    const got: Frame[] = [];
    for (let i = 0; i < all.length; i++) got.push(...byByte.push(all.subarray(i, i + 1)));
    assert.deepEqual(
      got.map((f) => [f.kind, f.payload.length]),
      [[5, 5], [6, 0], [5, 70_000]],
    );
    assert.equal(new FrameDecoder().push(all).length, 3);
  });

  it('rejects a frame longer than the maximum', () => {
    const head = Buffer.alloc(5);
    head.writeUInt32BE(MAX_FRAME_PAYLOAD + 1, 0);
    assert.throws(() => new FrameDecoder().push(head), FrameError);
  });
});

describe('agent protocol over a Unix socket', () => {
  let agent: RunningAgent;
  let client: AgentClient;
  before(async () => {
    agent = await startAgent();
    client = await agent.client();
  });
  after(async () => {
    client?.close();
    await agent?.stop();
  });

  it('answers Ping with its version', async () => {
    const r = await client.ping();
    assert.equal(r.protocolVersion, 1);
    assert.match(r.agentVersion, /^\d+\.\d+\.\d+/);
    assert.ok(r.uptimeNs > 0n);
  });

  it('answers many concurrent calls, each by its id', async () => {
    const results = await Promise.allSettled([
      ...Array.from({ length: 50 }, () => client.ping()),
      ...Array.from({ length: 50 }, (_, i) => client.startContainer(`missing-${i}`)),
    ]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 50);
    results.slice(50).forEach((r, i) => {
      assert.equal(r.status, 'rejected');
      assert.match(((r as PromiseRejectedResult).reason as Error).message, new RegExp(`missing-${i}\\b`));
    });
  });

  it('reports an unknown container as NOT_FOUND, naming the call and the container', async () => {
    await rejectsWith(client.startContainer('nosuch'), (err) => {
      assert.equal(err.code, 'NOT_FOUND');
      assert.equal(err.rpc, 'StartContainer');
      assert.equal(err.containerId, 'nosuch');
      assert.match(err.message, /StartContainer\(nosuch\).*not found/);
    });
    await rejectsWith(client.waitProcess('nosuch', ''), (err) => assert.equal(err.code, 'NOT_FOUND'));
    await rejectsWith(client.waitProcess('nosuch', 'e1'), (err) => assert.equal(err.execId, 'e1'));
    await rejectsWith(client.stats('nosuch'), (err) => assert.equal(err.rpc, 'Stats'));
    await rejectsWith(client.deleteContainer('nosuch'), (err) => assert.equal(err.code, 'NOT_FOUND'));
    await rejectsWith(client.signalProcess('nosuch', '', 'SIGTERM'), (err) => assert.equal(err.code, 'NOT_FOUND'));
    await rejectsWith(client.closeStdin('nosuch', ''), (err) => assert.equal(err.code, 'NOT_FOUND'));
    await rejectsWith(client.pauseContainer('nosuch'), (err) => assert.equal(err.code, 'NOT_FOUND'));
    await rejectsWith(client.openOutput('nosuch', '', 'stdout'), (err) => {
      assert.equal(err.code, 'NOT_FOUND');
      assert.equal(err.rpc, 'AttachStdout');
    });
    await rejectsWith(client.openStdin('nosuch'), (err) => assert.equal(err.rpc, 'AttachStdin'));
  });

  it('rejects malformed ids and empty specs as INVALID_ARGUMENT', async () => {
    await rejectsWith(client.startContainer('../etc'), (err) => assert.equal(err.code, 'INVALID_ARGUMENT'));
    await rejectsWith(client.startContainer(''), (err) => assert.equal(err.code, 'INVALID_ARGUMENT'));
    await rejectsWith(client.startContainer('x'.repeat(65)), (err) => assert.equal(err.code, 'INVALID_ARGUMENT'));
    await rejectsWith(client.execProcess('c', 'a/b', {}, {}), (err) => assert.equal(err.code, 'INVALID_ARGUMENT'));
    await rejectsWith(client.createContainer('c1', Buffer.alloc(0), {}), (err) => assert.equal(err.code, 'INVALID_ARGUMENT'));
  });

  it('answers frames it cannot understand with errors and keeps serving the connection', async () => {
    const raw = await RawConn.open(agent.socket);
    // Anything before the hello is refused, the hello still works afterwards.
    raw.send(FrameKind.Request, request(1, { ping: {} }));
    let reply = decodeMessage<Reply>(T().HelloReply, (await raw.next()).payload);
    assert.equal(reply.error?.code, 'ERROR_CODE_PROTOCOL');
    raw.send(FrameKind.Hello, hello(1));
    reply = decodeMessage<Reply>(T().HelloReply, (await raw.next()).payload);
    assert.equal(reply.error, null);
    assert.equal(reply.version, 1);

    // Garbage payload: error with id 0.
    raw.send(FrameKind.Request, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    let f = await raw.next();
    assert.equal(f.kind, FrameKind.Response);
    let resp = decodeMessage<Resp>(T().Response, f.payload);
    assert.equal(resp.id, '0');
    assert.equal(resp.error?.code, 'ERROR_CODE_PROTOCOL');

    // A request whose call is missing: the id is echoed.
    raw.send(FrameKind.Request, request(42, {}));
    resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.equal(resp.id, '42');
    assert.equal(resp.error?.code, 'ERROR_CODE_PROTOCOL');
    assert.match(resp.error!.message, /no call/);

    // A truncated nested message (length runs past the end).
    raw.send(FrameKind.Request, Buffer.from([0x08, 0x07, 0x62, 0x10, 0x0a]));
    resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.equal(resp.error?.code, 'ERROR_CODE_PROTOCOL');

    // An unknown frame kind, and DATA on a control connection.
    raw.send(99, Buffer.from('?'));
    resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.match(resp.error!.message, /kind 99/);
    raw.send(FrameKind.Data, Buffer.from('stray'));
    resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.equal(resp.error?.code, 'ERROR_CODE_PROTOCOL');

    // A call from a newer protocol revision (field 99 of Request).
    raw.send(FrameKind.Request, Buffer.from([0x08, 0x05, 0x9a, 0x06, 0x00]));
    resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.equal(resp.id, '5');
    assert.equal(resp.error?.code, 'ERROR_CODE_UNIMPLEMENTED');

    // A string field with the wrong wire type, and one holding a NUL.
    raw.send(FrameKind.Request, Buffer.from([0x08, 0x06, 0x6a, 0x02, 0x08, 0x01]));
    resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.equal(resp.id, '6');
    assert.equal(resp.error?.code, 'ERROR_CODE_PROTOCOL');
    raw.send(FrameKind.Request, request(7, { startContainer: { containerId: 'a\0b' } }));
    resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.equal(resp.error?.code, 'ERROR_CODE_PROTOCOL');

    // Still serving on the same connection.
    raw.send(FrameKind.Request, request(8, { ping: {} }));
    resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.equal(resp.id, '8');
    assert.equal(resp.error, null);
    assert.ok(resp.ping);
    raw.socket.destroy();
  });

  it('answers every one of many random payloads and keeps running', async () => {
    const raw = await RawConn.open(agent.socket);
    raw.send(FrameKind.Hello, crypto.randomBytes(7));  // a random hello
    await raw.next();
    raw.send(FrameKind.Hello, hello(1));
    assert.equal(decodeMessage<Reply>(T().HelloReply, (await raw.next()).payload).error, null);
    for (let i = 0; i < 300; i++) {
      // Random bytes, and valid requests with random bytes spliced into the call.
      const valid = Buffer.from(request(i + 1, { execProcess: { containerId: 'c', execId: 'e', processJson: Buffer.from('{}') } }));
      const payload = i % 2 ? crypto.randomBytes(i % 50) : Buffer.concat([valid.subarray(0, i % valid.length), crypto.randomBytes(3)]);
      raw.send(FrameKind.Request, payload);
      const f = await raw.next();
      assert.equal(f.kind, FrameKind.Response);
      decodeMessage<Resp>(T().Response, f.payload);
    }
    raw.socket.destroy();
    assert.equal(agent.proc.exitCode, null);
    assert.equal((await client.ping()).protocolVersion, 1);
  });

  it('closes a connection announcing an oversized frame, and keeps serving others', async () => {
    const raw = await RawConn.open(agent.socket);
    raw.send(FrameKind.Hello, hello(1));
    await raw.next();
    const head = Buffer.alloc(5);
    head.writeUInt32BE(0xfffffff0, 0);
    head[4] = FrameKind.Request;
    raw.socket.write(head);
    const resp = decodeMessage<Resp>(T().Response, (await raw.next()).payload);
    assert.match(resp.error!.message, /exceeds the maximum/);
    await raw.waitClosed();
    assert.equal((await client.ping()).protocolVersion, 1);
  });

  it('refuses a hello with another protocol version or role', async () => {
    const raw = await RawConn.open(agent.socket);
    raw.send(FrameKind.Hello, encodeMessage(T().Hello, { version: 2, role: 1 }));
    let reply = decodeMessage<Reply>(T().HelloReply, (await raw.next()).payload);
    assert.equal(reply.error?.code, 'ERROR_CODE_FAILED_PRECONDITION');
    raw.send(FrameKind.Hello, encodeMessage(T().Hello, { version: 1, role: 0 }));
    reply = decodeMessage<Reply>(T().HelloReply, (await raw.next()).payload);
    assert.equal(reply.error?.code, 'ERROR_CODE_INVALID_ARGUMENT');
    raw.socket.destroy();
  });

  it('survives clients that vanish mid-frame', async () => {
    for (let i = 0; i < 20; i++) {
      const s = await connectUnix(agent.socket);
      s.write(encodeFrame(FrameKind.Hello, hello(1)).subarray(0, i % 7));
      s.destroy();
    }
    assert.equal((await client.ping()).protocolVersion, 1);
  });

  it('works through connectVsock and its CONNECT handshake', async () => {
    // A stand-in for the VMM's hybrid vsock socket: answers the handshake, then splices the
    // connection to the agent's Unix socket.
    const uds = path.join(agent.dir, 'vsock.sock');
    const seen: string[] = [];
    const server = net.createServer((host) => {
      let buf = '';
      const onData = (d: Buffer) => {
        buf += d.toString('latin1');
        if (!buf.includes('\n')) return;
        host.off('data', onData);
        const line = buf.slice(0, buf.indexOf('\n'));
        seen.push(line);
        if (line !== 'CONNECT 1024') {
          host.end('ERR no listener\n');
          return;
        }
        const guest = net.createConnection(agent.socket, () => {
          host.write('OK 4242\n');
          const rest = buf.slice(buf.indexOf('\n') + 1);
          if (rest) guest.write(Buffer.from(rest, 'latin1'));
          host.pipe(guest).pipe(host);
        });
        guest.on('error', () => host.destroy());
        host.on('error', () => guest.destroy());
      };
      host.on('data', onData);
    });
    await new Promise<void>((r) => server.listen(uds, r));
    try {
      const viaVsock = await AgentClient.connect({ connect: () => connectVsock(uds, 1024) });
      assert.equal((await viaVsock.ping()).protocolVersion, 1);
      viaVsock.close();
      assert.deepEqual(seen, ['CONNECT 1024']);
      await assert.rejects(connectVsock(uds, 5), (err: unknown) => {
        assert.ok(err instanceof VsockConnectError);
        assert.match(err.message, /port 5.*refused: "ERR no listener"/);
        return true;
      });
    } finally {
      server.close();
    }
  });

  it('times out a call that gets no answer, and fails pending calls when the connection drops', async () => {
    // A fake agent that says hello and then never answers.
    const uds = path.join(agent.dir, 'silent.sock');
    const sockets: net.Socket[] = [];
    const server = net.createServer((s) => {
      sockets.push(s);
      s.once('data', () => s.write(encodeFrame(FrameKind.HelloReply, encodeMessage(T().HelloReply, { version: 1 }))));
    });
    await new Promise<void>((r) => server.listen(uds, r));
    try {
      const silent = await AgentClient.connect({ connect: () => connectUnix(uds), timeoutMs: 200 });
      await assert.rejects(silent.startContainer('c9'), (err: unknown) => {
        assert.ok(err instanceof AgentTimeoutError);
        assert.equal(err.code, 'TIMEOUT');
        assert.match(err.message, /StartContainer\(c9\): no answer within 200 ms/);
        return true;
      });
      const waiting = silent.waitProcess('c9', 'x');  // no timeout by default
      await new Promise((r) => setTimeout(r, 300));
      sockets.forEach((s) => s.destroy());
      await assert.rejects(waiting, (err: unknown) => {
        assert.ok(err instanceof AgentConnectionError);
        assert.equal(err.rpc, 'WaitProcess');
        return true;
      });
      assert.ok(silent.closed);
      await assert.rejects(silent.ping(), AgentConnectionError);
    } finally {
      server.close();
    }
  });
});

// ---- containers with crun ---------------------------------------------------------------------

async function crunProbe(): Promise<string | undefined> {
  if (!isRoot) return 'not root';
  if (!fs.existsSync('/usr/bin/crun')) return 'crun is not installed (apt-get install crun)';
  if (!haveStaticBusybox()) return 'busybox-static is not installed';
  let agent: RunningAgent | undefined;
  const rootfs = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-probe-rootfs-'));
  try {
    makeBusyboxRootfs(rootfs);
    agent = await startAgent({ isolated: true });
    const client = await agent.client();
    try {
      await client.createContainer('probe', ociSpec(rootfs, { args: ['true'] }), {});
      await client.startContainer('probe');
      const exit = await client.waitProcess('probe', '', { timeoutMs: 20_000 });
      await client.deleteContainer('probe');
      if (exit.exitStatus !== 0) return `a probe container exited with ${exit.exitStatus}`;
    } finally {
      client.close();
    }
    return undefined;
  } catch (err) {
    return `crun cannot run containers here: ${(err as Error).message}\n${agent?.log() ?? ''}`;
  } finally {
    await agent?.stop();
    fs.rmSync(rootfs, { recursive: true, force: true });
  }
}

const crunSkip = await crunProbe();
if (crunSkip) console.log(`# skipping container tests: ${crunSkip}`);

describe('containers (crun)', { skip: crunSkip }, () => {
  let agent: RunningAgent;
  let client: AgentClient;
  let rootfs: string;
  let n = 0;
  const newId = () => `c${++n}`;
  const spec = (args: string[], terminal = false) => ociSpec(rootfs, { args, terminal });

  before(async () => {
    rootfs = makeBusyboxRootfs(fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-rootfs-')));
    agent = await startAgent({ isolated: true });
    client = await agent.client();
  });
  after(async () => {
    client?.close();
    await agent?.stop();
    if (process.env.STENCIL_TEST_AGENT_LOG) console.log(agent?.log());
    fs.rmSync(rootfs, { recursive: true, force: true });
  });

  /** Creates, attaches and starts; resolves with the exit and the collected output. */
  async function run(args: string[], stdin?: Buffer) {
    const id = newId();
    await client.createContainer(id, spec(args), { stdin: !!stdin, stdout: true, stderr: true });
    const io = await client.attachStdio(id, '', { stdin: !!stdin, stdout: true, stderr: true });
    const out = readAll(io.stdout!);
    const err = readAll(io.stderr!);
    const pid = await client.startContainer(id);
    assert.ok(pid > 1);
    if (stdin) io.stdin!.end(stdin);
    const exit = await client.waitProcess(id, '', { timeoutMs: 60_000 });
    const result = { id, exit, stdout: await out, stderr: await err };
    await client.deleteContainer(id);
    return result;
  }

  it('runs echo hello: stdout exactly "hello\\n", stderr separate, exit 0', async () => {
    const r = await run(['sh', '-c', 'echo hello; echo oops >&2']);
    assert.equal(r.stdout.toString(), 'hello\n');
    assert.equal(r.stderr.toString(), 'oops\n');
    assert.equal(r.exit.exitStatus, 0);
    assert.equal(r.exit.oomKilled, false);
    assert.ok(Math.abs(r.exit.exitedAt.getTime() - Date.now()) < 60_000);
  });

  it('reports the exit code', async () => {
    assert.equal((await run(['sh', '-c', 'exit 7'])).exit.exitStatus, 7);
  });

  it('round-trips 1 MiB of random bytes through cat (stdin EOF closes the pipe)', async () => {
    const data = crypto.randomBytes(2 ** 20);
    const r = await run(['cat'], data);
    assert.equal(r.exit.exitStatus, 0);
    assert.equal(r.stdout.length, data.length);
    assert.ok(r.stdout.equals(data), 'stdout differs from stdin');
  });

  it('keeps the output of a process that exits before anyone attaches', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sh', '-c', 'seq 1 2000; echo tail >&2']), { stdout: true, stderr: true });
    await client.startContainer(id);
    const exit = await client.waitProcess(id, '', { timeoutMs: 30_000 });
    assert.equal(exit.exitStatus, 0);
    const { stdout, stderr } = await client.attachStdio(id, '', { stdout: true, stderr: true });
    const expected = Array.from({ length: 2000 }, (_, i) => `${i + 1}\n`).join('');
    assert.equal((await readAll(stdout!)).toString(), expected);
    assert.equal((await readAll(stderr!)).toString(), 'tail\n');
    await client.deleteContainer(id);
  });

  it('backpressures a flooding process instead of buffering its output', async () => {
    const id = newId();
    await client.createContainer(id, spec(['yes', 'flood']), { stdout: true });
    const { stdout } = await client.attachStdio(id, '', { stdout: true });
    await client.startContainer(id);
    // Read a little, then stop reading for a while.
    const first = await new Promise<Buffer>((resolve) => stdout!.once('data', resolve));
    assert.match(first.toString(), /^flood\n/);
    stdout!.pause();
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${agent.proc.pid}/status`, 'utf8'))![1]);
    await new Promise((r) => setTimeout(r, 500));
    const before = rss();
    await new Promise((r) => setTimeout(r, 1500));
    const grown = rss() - before;
    assert.ok(grown < 1024, `the agent grew by ${grown} KiB while the reader was paused`);
    assert.ok(stdout!.readableLength < 4 * 2 ** 20, `${stdout!.readableLength} bytes buffered on the host`);
    // Reading again gets data flowing again.
    let more = 0;
    stdout!.on('data', (d: Buffer) => (more += d.length));
    stdout!.resume();
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(more > 100_000, `only ${more} bytes after resuming`);
    // Delete kills the flood; the stream then ends (EOF after what was in the pipe).
    const ended = finished(stdout!);
    await client.deleteContainer(id);
    await ended;
  });

  it('execs processes in a running container, with their own stdio and status', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await client.startContainer(id);
    const pid = await client.execProcess(id, 'e1', ociProcess({ args: ['sh', '-c', 'echo exec-out; echo exec-err >&2; exit 3'] }), {
      stdout: true,
      stderr: true,
    });
    assert.ok(pid > 1);
    const io = await client.attachStdio(id, 'e1', { stdout: true, stderr: true });
    const [out, err, exit] = await Promise.all([readAll(io.stdout!), readAll(io.stderr!), client.waitProcess(id, 'e1')]);
    assert.equal(out.toString(), 'exec-out\n');
    assert.equal(err.toString(), 'exec-err\n');
    assert.equal(exit.exitStatus, 3);
    // Exec ids are unique while the record exists; DeleteProcess frees it.
    await rejectsWith(client.execProcess(id, 'e1', ociProcess({ args: ['true'] }), {}), (e) => assert.equal(e.code, 'ALREADY_EXISTS'));
    await client.deleteProcess(id, 'e1');
    await rejectsWith(client.waitProcess(id, 'e1'), (e) => assert.equal(e.code, 'NOT_FOUND'));
    // stdin of an exec.
    await client.execProcess(id, 'e2', ociProcess({ args: ['sh', '-c', 'read x; echo "got $x"'] }), { stdin: true, stdout: true });
    const io2 = await client.attachStdio(id, 'e2', { stdin: true, stdout: true });
    io2.stdin!.end('line\n');
    assert.equal((await readAll(io2.stdout!)).toString(), 'got line\n');
    assert.equal((await client.waitProcess(id, 'e2')).exitStatus, 0);
    // A failing exec reports crun's error and leaves no record.
    await rejectsWith(client.execProcess(id, 'e3', ociProcess({ args: ['/no/such/binary'] }), {}), (e) => {
      assert.equal(e.code, 'RUNTIME');
      assert.match(e.message, /ExecProcess\(c\d+\/e3\)/);
    });
    await rejectsWith(client.waitProcess(id, 'e3'), (e) => assert.equal(e.code, 'NOT_FOUND'));
    // Killed by a signal: 128 + signal (an exec is not the namespace's init, so it can die of it).
    await client.execProcess(id, 'e4', ociProcess({ args: ['sh', '-c', 'kill -9 $$'] }), {});
    assert.equal((await client.waitProcess(id, 'e4')).exitStatus, 137);
    await client.deleteContainer(id);
  });

  it('signals the init process, one process or all of them', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sh', '-c', 'trap "exit 42" TERM; while :; do sleep 0.1; done']), {});
    await client.startContainer(id);
    await new Promise((r) => setTimeout(r, 300));  // let the trap be installed
    await client.signalProcess(id, '', 'SIGTERM');
    assert.equal((await client.waitProcess(id, '', { timeoutMs: 20_000 })).exitStatus, 42);
    await rejectsWith(client.signalProcess(id, '', 'SIGTERM'), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.deleteContainer(id);

    const id2 = newId();
    await client.createContainer(id2, spec(['sleep', '1000']), {});
    await client.startContainer(id2);
    await client.execProcess(id2, 'x', ociProcess({ args: ['sleep', '1000'] }), {});
    await client.signalProcess(id2, '', 'SIGKILL', { all: true });
    const [a, b] = await Promise.all([client.waitProcess(id2, ''), client.waitProcess(id2, 'x')]);
    assert.equal(a.exitStatus, 137);
    assert.equal(b.exitStatus, 137);
    await client.deleteContainer(id2);
  });

  it('gives a terminal process a pty that can be resized', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sh', '-c', 'tty; stty size; read x; echo "in:$x"'], true), { terminal: true, stdin: true, stdout: true });
    await client.resizePty(id, '', { width: 100, height: 40 });
    const io = await client.attachStdio(id, '', { terminal: true, stdin: true, stdout: true, stderr: true });
    assert.equal(io.stderr, undefined);
    let text = '';
    io.stdout!.on('data', (d: Buffer) => (text += d.toString().replace(/\r/g, '')));
    const out = finished(io.stdout!);
    await client.startContainer(id);
    // Type only once the size is printed (the tty echoes input, which would interleave).
    for (let i = 0; i < 200 && !/40 100\n/.test(text); i++) await new Promise((r) => setTimeout(r, 25));
    assert.match(text, /^\/dev\/pts\/\d+\n40 100\n$/);
    io.stdin!.write('typed\n');
    assert.equal((await client.waitProcess(id, '', { timeoutMs: 20_000 })).exitStatus, 0);
    await out;
    assert.match(text, /typed\nin:typed\n$/);
    io.stdin!.destroy();
    await rejectsWith(client.resizePty(id, 'nope', { width: 1, height: 1 }), (e) => assert.equal(e.code, 'NOT_FOUND'));
    await client.deleteContainer(id);

    // An exec with a terminal of its own.
    const id2 = newId();
    await client.createContainer(id2, spec(['sleep', '1000']), {});
    await client.startContainer(id2);
    await client.execProcess(id2, 't', ociProcess({ args: ['sh', '-c', 'sleep 0.3; stty size; tty'], terminal: true }), {
      terminal: true,
      stdout: true,
    });
    await client.resizePty(id2, 't', { width: 33, height: 11 });
    const { stdout } = await client.attachStdio(id2, 't', { terminal: true, stdout: true });
    const [out2, exit2] = await Promise.all([readAll(stdout!), client.waitProcess(id2, 't', { timeoutMs: 20_000 })]);
    assert.equal(exit2.exitStatus, 0);
    assert.match(out2.toString().replace(/\r/g, ''), /^11 33\n\/dev\/pts\/\d+\n$/);
    await rejectsWith(client.resizePty(id2, '', { width: 1, height: 1 }), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.deleteContainer(id2);
  });

  it('closes stdin without an attached stream, and refuses to forget a running exec', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await client.startContainer(id);
    await client.execProcess(id, 'cat', ociProcess({ args: ['cat'] }), { stdin: true });
    await rejectsWith(client.deleteProcess(id, 'cat'), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.closeStdin(id, 'cat');
    assert.equal((await client.waitProcess(id, 'cat', { timeoutMs: 20_000 })).exitStatus, 0);
    await client.closeStdin(id, 'cat');  // idempotent
    await rejectsWith(client.openStdin(id, 'cat'), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await rejectsWith(client.openOutput(id, 'cat', 'stderr'), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.deleteProcess(id, 'cat');
    await client.deleteContainer(id);
  });

  it('pauses and resumes a container with the cgroup freezer, and reports stats', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await client.startContainer(id);
    const stats = await client.stats(id);
    assert.match(stats.cgroup, /^\/sys\/fs\/cgroup\/.+/);
    assert.ok(stats.cpu.usageUsec >= 0);
    // The cgroup as the agent sees it (it may have a mount namespace of its own).
    const cgroupDir = path.join(`/proc/${agent.proc.pid}/root`, stats.cgroup);
    const frozen = () => fs.readFileSync(path.join(cgroupDir, 'cgroup.freeze'), 'utf8').trim();
    await client.pauseContainer(id);
    assert.equal(frozen(), '1');
    await rejectsWith(client.pauseContainer(id), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await rejectsWith(client.execProcess(id, 'p', ociProcess({ args: ['true'] }), {}), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.resumeContainer(id);
    assert.equal(frozen(), '0');
    // Delete kills everything, answers pending waits, then forgets the container.
    const waiting = client.waitProcess(id, '');
    await client.deleteContainer(id);
    assert.equal((await waiting).exitStatus, 137);
    await rejectsWith(client.stats(id), (e) => assert.equal(e.code, 'NOT_FOUND'));
    assert.equal(fs.existsSync(cgroupDir), false, 'the cgroup was left behind');
  });

  it('refuses a second create with the same id and reports crun failures', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await rejectsWith(client.createContainer(id, spec(['true']), {}), (e) => assert.equal(e.code, 'ALREADY_EXISTS'));
    await rejectsWith(client.startContainer(id).then(() => client.startContainer(id)), (e) =>
      assert.equal(e.code, 'FAILED_PRECONDITION'),
    );
    await client.deleteContainer(id);
    await rejectsWith(client.createContainer(newId(), '{not json', {}), (e) => assert.equal(e.code, 'RUNTIME'));
    const bad = spec(['true']);
    (bad.root as { path: string }).path = '/no/such/rootfs';
    const badId = newId();
    await rejectsWith(client.createContainer(badId, bad, {}), (e) => {
      assert.equal(e.code, 'RUNTIME');
      assert.equal(e.containerId, badId);
    });
    await rejectsWith(client.startContainer(badId), (e) => assert.equal(e.code, 'NOT_FOUND'));
    assert.equal((await client.ping()).protocolVersion, 1);
  });

  it('sets up the guest: hostname, entropy and mounts', async () => {
    const target = path.join(agent.dir, 'mnt', 'scratch');
    await client.setupGuest({
      hostname: 'stencil-unit',
      entropy: crypto.randomBytes(64),
      mounts: [{ source: 'tmpfs', target, fstype: 'tmpfs', options: ['nosuid', 'size=1m'] }],
    });
    // The agent has its own mount and UTS namespaces: look through its eyes.
    const mounts = fs.readFileSync(`/proc/${agent.proc.pid}/mountinfo`, 'utf8');
    assert.ok(mounts.includes(` ${target} `), `${target} is not mounted in the agent's namespace`);
    assert.notEqual(os.hostname(), 'stencil-unit', 'the host hostname changed');
    const r = await run(['hostname']);  // the container has a UTS namespace of its own
    assert.equal(r.stdout.toString(), 'stencil-test\n');
    await rejectsWith(client.setupGuest({ mounts: [{ source: 'x', target: 'relative', fstype: 'tmpfs' }] }), (e) =>
      assert.equal(e.code, 'INVALID_ARGUMENT'),
    );
    await rejectsWith(client.setupGuest({ entropy: Buffer.alloc(5000) }), (e) => assert.equal(e.code, 'INVALID_ARGUMENT'));
  });
});
