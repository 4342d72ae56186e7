import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { messageType, TASK_SERVICE_V2, TASK_SERVICE_V3 } from '../containerd/protos.js';
import { TASK_METHODS, taskServiceDefinitions, type TaskHandlers } from '../containerd/task-api.js';
import { Code, RpcError } from './errors.js';
import { GrpcServer } from './grpc-server.js';
import type { CallContext } from './service.js';

const StateRequest = messageType('containerd.task.v2.StateRequest');
const StateResponse = messageType('containerd.task.v2.StateResponse');

describe('GrpcServer', () => {
  let dir: string;
  let socketPath: string;
  let server: GrpcServer;
  let client: grpc.Client;
  let lastCtx: CallContext | undefined;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grpc-test-'));
    socketPath = path.join(dir, 'shim.sock');
    const handlers: Record<string, (req: never, ctx: CallContext) => Promise<unknown>> = {};
    for (const m of TASK_METHODS) handlers[m] = async () => Promise.reject(new RpcError(Code.Unimplemented, `${m}: not in this test`));
    handlers.State = async (req: { id: string; execId: string }, ctx: CallContext) => {
      lastCtx = ctx;
      if (req.id === 'gone') throw new RpcError(Code.NotFound, 'task gone not found');
      if (req.id === 'boom') throw new Error('kaboom');
      return { id: req.id, execId: req.execId, pid: 9, status: 3, exitStatus: 137, exitedAt: new Date(2000) };
    };
    server = new GrpcServer();
    for (const def of taskServiceDefinitions(handlers as unknown as TaskHandlers)) server.addService(def);
    await server.listen(socketPath);
    client = new grpc.Client(`unix://${socketPath}`, grpc.credentials.createInsecure());
  });

  after(async () => {
    client.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function call(method: string, request: Record<string, unknown>, metadata = new grpc.Metadata()): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        method,
        (r: Record<string, unknown>) => Buffer.from(StateRequest.encode(StateRequest.fromObject(r)).finish()),
        (b: Buffer) => StateResponse.toObject(StateResponse.decode(b), { longs: Number, defaults: true }),
        request,
        metadata,
        (err, res) => (err ? reject(err) : resolve(res!)),
      );
    });
  }

  it('listens on the bare socket path, owner-only', () => {
    assert.equal(fs.statSync(socketPath).isSocket(), true);
    assert.equal(fs.statSync(socketPath).mode & 0o777, 0o600);
  });

  it('serves /containerd.task.v3.Task/State with protobufjs messages and the namespace header', async () => {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', 'k8s.io');
    const res = await call(`/${TASK_SERVICE_V3}/State`, { id: 't1', execId: 'e1' }, md);
    assert.equal(res.id, 't1');
    assert.equal(res.execId, 'e1');
    assert.equal(res.exitStatus, 137);
    assert.deepEqual(res.exitedAt, { seconds: 2, nanos: 0 });
    assert.equal(lastCtx?.metadata['containerd-namespace'], 'k8s.io');
    assert.equal(lastCtx?.service, TASK_SERVICE_V3);
  });

  it('serves the v2 service name too', async () => {
    assert.equal((await call(`/${TASK_SERVICE_V2}/State`, { id: 'v2' })).id, 'v2');
  });

  it('maps RpcError codes and other errors (UNKNOWN) to gRPC status', async () => {
    await assert.rejects(call(`/${TASK_SERVICE_V3}/State`, { id: 'gone' }), { code: grpc.status.NOT_FOUND, details: 'task gone not found' });
    await assert.rejects(call(`/${TASK_SERVICE_V3}/State`, { id: 'boom' }), { code: grpc.status.UNKNOWN, details: 'kaboom' });
    await assert.rejects(call(`/${TASK_SERVICE_V3}/Checkpoint`, { id: 'x' }), { code: grpc.status.UNIMPLEMENTED });
  });

  it('answers UNIMPLEMENTED for unknown methods and INTERNAL for garbage payloads', async () => {
    await assert.rejects(call('/containerd.task.v3.Task/Nope', { id: 'x' }), { code: grpc.status.UNIMPLEMENTED });
    const garbage = await new Promise<grpc.ServiceError>((resolve) => {
      client.makeUnaryRequest(
        `/${TASK_SERVICE_V3}/State`,
        () => Buffer.from([0x0a, 0xff, 0xff]),
        (b: Buffer) => b,
        {},
        new grpc.Metadata(),
        (err) => resolve(err!),
      );
    });
    assert.equal(garbage.code, grpc.status.INTERNAL);
    assert.match(garbage.details, /cannot decode StateRequest/);
  });
});
