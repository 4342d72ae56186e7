// The guest agent binary, run on this host over --unix (no VM), driven by AgentClient and by
// hand-made frames: the frame layer, the protocol, malformed input, timeouts. Containers are in
// agent-containers.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hello, RawConn, rejectsWith, type Reply, request, type Resp, type RunningAgent, startAgent, T } from './testing/agent-harness.js';
import { AgentClient } from './client.js';
import { AgentConnectionError, AgentTimeoutError } from './errors.js';
import { encodeFrame, type Frame, FrameDecoder, FrameError, FrameKind, MAX_FRAME_PAYLOAD } from './framing.js';
import { decodeMessage, encodeMessage } from './protocol.js';
import { connectUnix, connectVsock, VsockConnectError } from './vsock.js';

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
    const f = await raw.next();
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
        assert.equal(err.code, 'DEADLINE_EXCEEDED');
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

  it('closes a connection that completes only after the hello timed out, instead of leaking it', async () => {
    let destroyed = 0;
    let made!: () => void;
    const connected = new Promise<void>((resolve) => (made = resolve));
    const connect = () =>
      new Promise<net.Socket>((resolve) =>
        setTimeout(() => {
          resolve({ destroy: () => void destroyed++ } as unknown as net.Socket);
          made();
        }, 100),
      );
    await assert.rejects(AgentClient.connect({ connect, connectTimeoutMs: 20 }), (err: unknown) => {
      assert.ok(err instanceof AgentTimeoutError && /no hello reply within 20 ms/.test(err.message), String(err));
      return true;
    });
    await connected;
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(destroyed, 1);
  });
});
