import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { messageType, service, TASK_SERVICE_V2 } from '../containerd/protos.js';
import { type AnyRpcHandler, type CallContext, serviceDefinition } from '../rpc/service.js';
import { TtrpcClient } from './client.js';
import { decodeResponse, encodeRequest } from './envelope.js';
import { Code, RpcClosedError, RpcError } from '../rpc/errors.js';
import { encodeFrame, type Frame, FrameDecoder, HEADER_LENGTH, MAX_DATA_LENGTH, MessageType } from './frame.js';
import { TtrpcServer } from './server.js';

const State = { req: messageType('containerd.task.v2.StateRequest'), res: messageType('containerd.task.v2.StateResponse') };
const Wait = { req: messageType('containerd.task.v2.WaitRequest'), res: messageType('containerd.task.v2.WaitResponse') };
const Empty = messageType('google.protobuf.Empty');
const KillRequest = messageType('containerd.task.v2.KillRequest');

/** Handlers for every Task method: State/Wait/Kill scripted by the test, the rest Unimplemented. */
function taskService(overrides: Record<string, AnyRpcHandler>) {
  const handlers: Record<string, AnyRpcHandler> = {};
  for (const m of service(TASK_SERVICE_V2).methodsArray) {
    handlers[m.name] = overrides[m.name] ?? (async () => Promise.reject(new RpcError(Code.Unimplemented, `${m.name} not scripted`)));
  }
  return serviceDefinition(service(TASK_SERVICE_V2), handlers);
}

/** A raw connection speaking frames, for what TtrpcClient never sends. */
async function rawConnection(socketPath: string) {
  const socket = net.createConnection(socketPath);
  await new Promise((resolve) => socket.once('connect', resolve));
  const decoder = new FrameDecoder();
  const waiting = new Map<number, (f: Frame) => void>();
  const received = new Map<number, Frame>();
  socket.on('data', (chunk) => {
    for (const f of decoder.push(chunk)) {
      if (f.kind !== 'frame') continue;
      received.set(f.streamId, f);
      waiting.get(f.streamId)?.(f);
    }
  });
  return {
    socket,
    send(id: number, service: string, method: string, payload: Uint8Array, timeoutNano = 0) {
      socket.write(encodeFrame(id, MessageType.Request, encodeRequest({ service, method, payload: Buffer.from(payload), timeoutNano })));
    },
    response(id: number) {
      const f = received.get(id);
      const frame = f ? Promise.resolve(f) : new Promise<Frame>((resolve) => waiting.set(id, resolve));
      return frame.then((fr) => {
        assert.equal(fr.type, MessageType.Response);
        return decodeResponse(fr.data);
      });
    },
  };
}

describe('TtrpcServer and TtrpcClient over a Unix socket', () => {
  let dir: string;
  let socketPath: string;
  let server: TtrpcServer;
  let client: TtrpcClient;
  const waiters: Array<() => void> = [];
  const seen: { metadata?: Record<string, string>; deadlineSignal?: AbortSignal } = {};

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
    socketPath = path.join(dir, 's.sock');
    server = new TtrpcServer();
    server.addService(
      taskService({
        State: async (req: { id: string; execId: string }, ctx: CallContext) => {
          seen.metadata = ctx.metadata;
          if (req.id === 'missing') throw new RpcError(Code.NotFound, 'task missing not found');
          if (req.id === 'boom') throw new Error('something broke');
          if (req.id === 'slow') await new Promise((r) => setTimeout(r, 200));
          return { id: req.id, execId: req.execId, bundle: '/b', pid: 42, status: 2, exitedAt: new Date(1_700_000_000_123) };
        },
        Wait: async (req: { id: string }, ctx: CallContext) => {
          if (req.id === 'forever') {
            seen.deadlineSignal = ctx.signal;
            return new Promise(() => undefined);
          }
          await new Promise<void>((resolve) => waiters.push(resolve));
          return { exitStatus: 3, exitedAt: { seconds: 10, nanos: 5 } };
        },
        Kill: async () => ({ ignored: true }),
      }),
    );
    await server.listen(socketPath);
    client = await TtrpcClient.connect(socketPath);
  });

  after(async () => {
    await client.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates the socket owner-only', () => {
    assert.equal(fs.statSync(socketPath).mode & 0o777, 0o600);
  });

  it('answers a call with the handler result, Dates encoded as Timestamps, metadata passed', async () => {
    const res = await client.invoke<Record<string, unknown>>(TASK_SERVICE_V2, 'State', State.req, { id: 't1', execId: 'e1' }, State.res, {
      metadata: { 'containerd-namespace-ttrpc': 'default' },
    });
    assert.equal(res.id, 't1');
    assert.equal(res.execId, 'e1');
    assert.equal(res.pid, 42);
    assert.equal(res.status, 2);
    assert.deepEqual(res.exitedAt, { seconds: 1_700_000_000, nanos: 123_000_000 });
    assert.equal(seen.metadata?.['containerd-namespace-ttrpc'], 'default');
  });

  it('answers Empty methods with an empty payload whatever the handler returns', async () => {
    const raw = await client.call(TASK_SERVICE_V2, 'Kill', KillRequest.encode({ id: 'x', signal: 9 }).finish());
    assert.equal(raw.length, 0);
    assert.deepEqual(Empty.toObject(Empty.decode(raw)), {});
  });

  it('keeps a blocking call open while others are answered, and answers out of order', async () => {
    const order: string[] = [];
    const blocked = client.invoke(TASK_SERVICE_V2, 'Wait', Wait.req, { id: 't1' }, Wait.res).then((r) => {
      order.push('wait');
      return r;
    });
    const slow = client.invoke(TASK_SERVICE_V2, 'State', State.req, { id: 'slow' }, State.res).then(() => order.push('slow'));
    const fast = client.invoke(TASK_SERVICE_V2, 'State', State.req, { id: 'fast' }, State.res).then(() => order.push('fast'));
    await Promise.all([slow, fast]);
    assert.deepEqual(order, ['fast', 'slow']);
    waiters.shift()!();
    assert.deepEqual(await blocked, { exitStatus: 3, exitedAt: { seconds: 10, nanos: 5 } });
    assert.deepEqual(order, ['fast', 'slow', 'wait']);
  });

  it('serves many connections at once', async () => {
    const others = await Promise.all([1, 2, 3].map(() => TtrpcClient.connect(socketPath)));
    const ids = await Promise.all(
      others.map((c, i) => c.invoke<{ id: string }>(TASK_SERVICE_V2, 'State', State.req, { id: `c${i}` }, State.res).then((r) => r.id)),
    );
    assert.deepEqual(ids, ['c0', 'c1', 'c2']);
    await Promise.all(others.map((c) => c.close()));
  });

  it('maps an RpcError to its status and any other error to UNKNOWN', async () => {
    await assert.rejects(client.invoke(TASK_SERVICE_V2, 'State', State.req, { id: 'missing' }, State.res), (err: RpcError) => {
      assert.equal(err.code, Code.NotFound);
      assert.equal(err.message, 'task missing not found');
      return true;
    });
    await assert.rejects(client.invoke(TASK_SERVICE_V2, 'State', State.req, { id: 'boom' }, State.res), {
      code: Code.Unknown,
      message: 'something broke',
    });
  });

  it('answers UNIMPLEMENTED for an unknown service or method', async () => {
    await assert.rejects(client.call('containerd.task.v9.Task', 'State', new Uint8Array()), { code: Code.Unimplemented, message: 'service containerd.task.v9.Task' });
    await assert.rejects(client.call(TASK_SERVICE_V2, 'Frobnicate', new Uint8Array()), { code: Code.Unimplemented, message: 'method Frobnicate' });
  });

  it('answers INTERNAL for a payload that does not decode', async () => {
    await assert.rejects(client.call(TASK_SERVICE_V2, 'State', Buffer.from([0x0a, 0xff, 0xff, 0xff])), (err: RpcError) => {
      assert.equal(err.code, Code.Internal);
      assert.match(err.message, /cannot decode StateRequest/);
      return true;
    });
  });

  it('honours timeout_nano: DEADLINE_EXCEEDED and the handler signal aborted', async () => {
    const raw = await rawConnection(socketPath);
    raw.send(1, TASK_SERVICE_V2, 'Wait', Wait.req.encode({ id: 'forever' }).finish(), 50e6);
    const res = await raw.response(1);
    assert.equal(res.status?.code, Code.DeadlineExceeded);
    assert.equal(seen.deadlineSignal?.aborted, true);
    assert.equal((seen.deadlineSignal?.reason as RpcError).code, Code.DeadlineExceeded);
    raw.socket.destroy();
  });

  it('the client gives up on its own timeout', async () => {
    await assert.rejects(client.invoke(TASK_SERVICE_V2, 'Wait', Wait.req, { id: 'forever' }, Wait.res, { timeoutMs: 30 }), { code: Code.DeadlineExceeded });
  });

  it('rejects even and reused stream ids without dropping the connection', async () => {
    const raw = await rawConnection(socketPath);
    const payload = State.req.encode({ id: 'ok' }).finish();
    raw.send(2, TASK_SERVICE_V2, 'State', payload);
    const even = await raw.response(2);
    assert.equal(even.status?.code, Code.InvalidArgument);
    assert.match(even.status!.message, /must be odd/);
    raw.send(7, TASK_SERVICE_V2, 'State', payload);
    assert.equal((await raw.response(7)).status?.code, Code.OK);
    raw.send(5, TASK_SERVICE_V2, 'State', payload);
    const reused = await raw.response(5);
    assert.equal(reused.status?.code, Code.InvalidArgument);
    assert.match(reused.status!.message, /cannot be reused/);
    raw.send(9, TASK_SERVICE_V2, 'State', payload);
    const fine = await raw.response(9);
    assert.equal(fine.status?.code, Code.OK);
    assert.equal(State.res.decode(fine.payload).toJSON().id, 'ok');
    raw.socket.destroy();
  });

  it('answers RESOURCE_EXHAUSTED to an oversized frame and keeps serving the connection', async () => {
    const raw = await rawConnection(socketPath);
    const header = Buffer.alloc(HEADER_LENGTH);
    header.writeUInt32BE(MAX_DATA_LENGTH + 10, 0);
    header.writeUInt32BE(3, 4);
    header[8] = MessageType.Request;
    raw.socket.write(header);
    raw.socket.write(Buffer.alloc(MAX_DATA_LENGTH + 10));
    const res = await raw.response(3);
    assert.equal(res.status?.code, Code.ResourceExhausted);
    raw.send(5, TASK_SERVICE_V2, 'State', State.req.encode({ id: 'after' }).finish());
    assert.equal((await raw.response(5)).status?.code, Code.OK);
    raw.socket.destroy();
  });

  it('refuses a request over 4 MiB on the client side', async () => {
    await assert.rejects(client.call(TASK_SERVICE_V2, 'State', Buffer.alloc(MAX_DATA_LENGTH)), { code: Code.ResourceExhausted });
  });
});

describe('TtrpcServer shutdown', () => {
  it('fails pending calls with RpcClosedError, aborts handlers, flushes answers given', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
    const socketPath = path.join(dir, 's.sock');
    const server = new TtrpcServer();
    let waitSignal: AbortSignal | undefined;
    server.addService(
      taskService({
        Wait: async (_req: unknown, ctx: CallContext) => {
          waitSignal = ctx.signal;
          return new Promise(() => undefined);
        },
        Shutdown: async () => {
          setImmediate(() => void server.close());
          return {};
        },
      }),
    );
    await server.listen(socketPath);
    const client = await TtrpcClient.connect(socketPath);
    const pending = client.invoke(TASK_SERVICE_V2, 'Wait', Wait.req, { id: 't' }, Wait.res);
    await new Promise((r) => setTimeout(r, 20));
    // The answer to Shutdown arrives even though the server closes right after it.
    await client.call(TASK_SERVICE_V2, 'Shutdown', new Uint8Array());
    await assert.rejects(pending, (err: Error) => err instanceof RpcClosedError && /closed/.test(err.message));
    await client.closed;
    for (let i = 0; i < 100 && !waitSignal?.aborted; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(waitSignal?.aborted, true, 'the pending handler was told');
    assert.equal(client.isClosed, true);
    await assert.rejects(client.call(TASK_SERVICE_V2, 'State', new Uint8Array()), RpcClosedError);
    assert.equal(fs.existsSync(socketPath), false, 'socket file removed');
    await assert.rejects(TtrpcClient.connect(socketPath), (err: Error) => err instanceof RpcClosedError && /cannot connect/.test(err.message));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves an existing net.Server', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
    const socketPath = path.join(dir, 's.sock');
    const netServer = net.createServer();
    await new Promise<void>((r) => netServer.listen(socketPath, r));
    const server = new TtrpcServer();
    server.addService(taskService({ State: async (req: { id: string }) => ({ id: req.id }) }));
    server.serve(netServer);
    const client = await TtrpcClient.connect(socketPath);
    const res = await client.invoke<{ id: string }>(TASK_SERVICE_V2, 'State', State.req, { id: 'adopted' }, State.res);
    assert.equal(res.id, 'adopted');
    await client.close();
    await server.close();
    assert.equal(netServer.listening, false);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('TtrpcServer hand-over to another process (pod migration)', () => {
  it("passes the listening socket and a connection with a pending Wait; the other process answers it and serves on", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
    const socketPath = path.join(dir, 's.sock');
    const server = new TtrpcServer();
    server.addService(
      taskService({
        Wait: async () => new Promise(() => undefined),
        State: async (req: { id: string }) => ({ id: req.id, pid: process.pid }),
      }),
    );
    // As the shim daemon's: a connection accepted there is not read until served (it may be passed on).
    const listening = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => listening.listen(socketPath, resolve));
    listening.on('connection', (socket: net.Socket) => {
      server.accept(socket);
      socket.resume();
    });
    const child = fork(path.join(import.meta.dirname, 'testing', 'handover-child.js'), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const messages: Array<{ kind: string; of?: string }> = [];
    const next = (kind: string, of?: string) =>
      new Promise<void>((resolve) => {
        const check = () => messages.some((m) => m.kind === kind && m.of === of) && resolve();
        child.on('message', check);
        check();
      });
    child.on('message', (m: { kind: string; of?: string }) => messages.push(m));
    const client = await TtrpcClient.connect(socketPath);
    try {
      await next('ready');
      const state = async (c: TtrpcClient) => (await c.invoke<{ pid: number }>(TASK_SERVICE_V2, 'State', State.req, { id: 'x' }, State.res)).pid;
      assert.equal(await state(client), process.pid);
      const waited = client.invoke<{ exitStatus: number }>(TASK_SERVICE_V2, 'Wait', Wait.req, { id: 'seven' }, Wait.res);
      await new Promise((r) => setTimeout(r, 50));
      const options = { parked: (_s: string, m: string) => m === 'Wait', stays: () => false, timeoutMs: 2000 };
      await server.quiesce(options);
      // A call made now waits in the socket for the other process.
      const during = client.invoke<{ pid: number }>(TASK_SERVICE_V2, 'State', State.req, { id: 'during' }, State.res);
      child.send({ kind: 'server' }, listening);
      await next('ack', 'server');
      // Closing it here would unlink the socket file (libuv does for the process that bound it):
      // connections this process still accepts go to the other one as they are.
      listening.removeAllListeners('connection');
      listening.on('connection', (socket) => child.send({ kind: 'connection', state: { lastStreamId: 0, requests: [], unread: '' } }, socket));
      for (const { socket, state: handover } of server.takeConnections(options)) {
        child.send({ kind: 'connection', state: handover }, socket);
        await next('ack', 'connection');
      }
      assert.equal((await waited).exitStatus, 7, 'the parked Wait was answered by the other process');
      assert.equal((await during).pid, child.pid);
      assert.equal(await state(client), child.pid);
      const fresh = await TtrpcClient.connect(socketPath);
      assert.equal(await state(fresh), child.pid, 'new connections go to the other process');
      await fresh.close();
    } finally {
      await client.close();
      await server.close();
      listening.close();
      child.send({ kind: 'exit' });
      await new Promise((resolve) => child.once('exit', resolve));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
