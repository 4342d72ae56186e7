import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { messageType, TASK_SERVICE_V3 } from '../containerd/protos.js';
import { TASK_METHODS, taskServiceDefinitions, type TaskHandlers } from '../containerd/task-api.js';
import { podAdminDefinition, podAdminService, POD_ADMIN_SERVICE } from '../shim/admin-api.js';
import { TtrpcClient } from '../ttrpc/client.js';
import { TtrpcServer } from '../ttrpc/server.js';
import { Code, RpcError } from './errors.js';
import { GrpcServer } from './grpc-server.js';
import { acceptByProtocol } from './protocol-sniff.js';

const StateRequest = messageType('containerd.task.v2.StateRequest');
const StateResponse = messageType('containerd.task.v2.StateResponse');

describe('acceptByProtocol: gRPC and ttrpc on one socket', () => {
  let dir: string;
  let sock: string;
  let listener: net.Server;
  let grpcServer: GrpcServer;
  let ttrpcServer: TtrpcServer;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sniff-test-'));
    sock = path.join(dir, 'shim.sock');
    const handlers: Record<string, (req: never) => Promise<unknown>> = {};
    for (const m of TASK_METHODS) handlers[m] = async () => Promise.reject(new RpcError(Code.Unimplemented, m));
    handlers.State = async (req: { id: string }) => ({ id: req.id, pid: 9, status: 2 });
    grpcServer = new GrpcServer();
    for (const def of taskServiceDefinitions(handlers as unknown as TaskHandlers)) grpcServer.addService(def);
    ttrpcServer = new TtrpcServer();
    ttrpcServer.addService(
      podAdminDefinition({
        migrate: async () => Promise.reject(new RpcError(Code.FailedPrecondition, 'not here')),
        status: async () => ({ pid: 42, vmState: 'running', monitor: '', containers: ['a', 'b'] }),
      }),
    );
    const grpcAccept = await grpcServer.acceptor();
    const accept = acceptByProtocol({ grpc: grpcAccept, ttrpc: (s) => ttrpcServer.accept(s) });
    listener = net.createServer({ pauseOnConnect: true }, accept);
    await new Promise<void>((resolve) => listener.listen(sock, resolve));
  });

  after(async () => {
    await ttrpcServer.close();
    await grpcServer.close();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function grpcState(client: grpc.Client, id: string): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        `/${TASK_SERVICE_V3}/State`,
        (r: Record<string, unknown>) => Buffer.from(StateRequest.encode(StateRequest.fromObject(r)).finish()),
        (b: Buffer) => StateResponse.toObject(StateResponse.decode(b), { defaults: true }),
        { id },
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
        (err, res) => (err ? reject(err) : resolve(res!)),
      );
    });
  }

  async function ttrpcStatus(): Promise<Record<string, unknown>> {
    const client = await TtrpcClient.connect(sock);
    try {
      const m = podAdminService().methods.Status;
      return await client.invoke(POD_ADMIN_SERVICE, 'Status', m.resolvedRequestType!, {}, m.resolvedResponseType!);
    } finally {
      await client.close();
    }
  }

  const serverConnections = () => new Promise<number>((resolve, reject) => listener.getConnections((err, n) => (err ? reject(err) : resolve(n))));

  it('serves gRPC callers and ttrpc callers side by side, each on its own protocol', async () => {
    const client = new grpc.Client(`unix://${sock}`, grpc.credentials.createInsecure());
    try {
      const [a, status, b] = await Promise.all([grpcState(client, 'one'), ttrpcStatus(), grpcState(client, 'two')]);
      assert.equal(a.id, 'one');
      assert.equal(b.id, 'two');
      assert.equal(a.pid, 9);
      assert.equal(status.pid, 42);
      assert.deepEqual(status.containers, ['a', 'b']);
    } finally {
      client.close();
    }
  });

  it('keeps serving after callers that hang up before, or right after, their first byte; no connection is left open', async () => {
    for (const bytes of [Buffer.alloc(0), Buffer.from('P'), Buffer.from([0])]) {
      const c = net.connect(sock);
      await new Promise<void>((resolve) => c.once('connect', () => resolve()));
      c.resume(); // reads (and drops) whatever the server sends, its end included
      c.end(bytes);
      await new Promise<void>((resolve) => c.once('close', () => resolve()));
    }
    assert.equal((await ttrpcStatus()).pid, 42);
    const client = new grpc.Client(`unix://${sock}`, grpc.credentials.createInsecure());
    assert.equal((await grpcState(client, 'after')).id, 'after');
    client.close();
    for (let i = 0; i < 50 && (await serverConnections()) > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await serverConnections(), 0);
  });
});
