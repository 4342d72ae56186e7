import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { type CallContext, serviceDefinition } from '../rpc/service.js';
import { TtrpcServer } from '../ttrpc/server.js';
import { EventPublisher } from './events.js';
import { type AnyMessage, EVENTS_SERVICE, service, type Timestamp, unpackAny } from './protos.js';

interface Received {
  topic: string;
  namespace: string;
  timestamp: Timestamp;
  typeUrl: string;
  event: Record<string, unknown>;
  metadata: Record<string, string>;
}

/** A TtrpcServer playing containerd's events service, recording what it is forwarded. */
async function fakeContainerd(socketPath: string, received: Received[]): Promise<TtrpcServer> {
  const server = new TtrpcServer();
  server.addService(
    serviceDefinition(service(EVENTS_SERVICE), {
      Forward: async (req: { envelope: { topic: string; namespace: string; timestamp: Timestamp; event: AnyMessage } }, ctx: CallContext) => {
        const env = req.envelope;
        received.push({
          topic: env.topic,
          namespace: env.namespace,
          timestamp: env.timestamp,
          typeUrl: env.event.typeUrl,
          event: unpackAny(env.event),
          metadata: ctx.metadata,
        });
        return {};
      },
    }),
  );
  await server.listen(socketPath);
  return server;
}

describe('EventPublisher', () => {
  let dir: string;
  let socketPath: string;
  const servers: TtrpcServer[] = [];
  const publishers: EventPublisher[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'events-test-'));
    socketPath = path.join(dir, 'containerd.sock.ttrpc');
  });
  afterEach(async () => {
    await Promise.all(publishers.splice(0).map((p) => p.close({ timeoutMs: 0 })));
    await Promise.all(servers.splice(0).map((s) => s.close()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function publisher(options: { maxRetries?: number } = {}): EventPublisher {
    const p = new EventPublisher({ address: socketPath, namespace: 'k8s.io', retryDelayMs: 40, ...options });
    publishers.push(p);
    return p;
  }

  it('forwards envelopes in order with bare type URLs, namespace, topic, timestamp and metadata', async () => {
    const received: Received[] = [];
    servers.push(await fakeContainerd(socketPath, received));
    const pub = publisher();
    const before = Date.now() / 1000;
    const exitedAt = new Date(1_700_000_000_500);
    const results = [
      pub.publish('/tasks/create', 'TaskCreate', { containerId: 'c1', bundle: '/b', rootfs: [{ type: 'overlay', source: 'overlay', options: ['lowerdir=/l'] }], io: { stdout: '/fifo' }, pid: 7 }),
      pub.publish('/tasks/start', 'containerd.events.TaskStart', { containerId: 'c1', pid: 7 }),
      ...Array.from({ length: 20 }, (_, i) => pub.publish('/tasks/exec-added', 'TaskExecAdded', { containerId: 'c1', execId: `e${i}` })),
      pub.publish('/tasks/exit', 'TaskExit', { containerId: 'c1', id: 'c1', pid: 7, exitStatus: 3, exitedAt }),
    ];
    await pub.flush();
    assert.deepEqual(await Promise.all(results), results.map(() => true));
    assert.deepEqual(
      received.map((r) => r.topic),
      ['/tasks/create', '/tasks/start', ...Array.from({ length: 20 }, () => '/tasks/exec-added'), '/tasks/exit'],
    );
    assert.deepEqual(received.slice(2, 22).map((r) => r.event.execId), Array.from({ length: 20 }, (_, i) => `e${i}`));
    const [create, start] = received;
    assert.equal(create.typeUrl, 'containerd.events.TaskCreate');
    assert.equal(start.typeUrl, 'containerd.events.TaskStart');
    assert.equal(create.namespace, 'k8s.io');
    assert.equal(create.metadata['containerd-namespace-ttrpc'], 'k8s.io');
    assert.ok(create.timestamp.seconds >= Math.floor(before) && create.timestamp.seconds <= Date.now() / 1000 + 1, 'timestamp is now');
    assert.deepEqual((create.event.rootfs as unknown[])[0], { type: 'overlay', source: 'overlay', target: '', options: ['lowerdir=/l'] });
    assert.equal((create.event.io as { stdout: string }).stdout, '/fifo');
    const exit = received.at(-1)!;
    assert.equal(exit.typeUrl, 'containerd.events.TaskExit');
    assert.deepEqual(exit.event, { containerId: 'c1', id: 'c1', pid: 7, exitStatus: 3, exitedAt: { seconds: 1_700_000_000, nanos: 500_000_000 } });
  });

  it('throws at once for an unknown event type or a bad topic', () => {
    const pub = publisher();
    assert.throws(() => pub.publish('/tasks/exit', 'TaskExploded', {}), /unknown protobuf message type "containerd.events.TaskExploded"/);
    assert.throws(() => pub.publish('tasks/exit', 'TaskExit', {}), /must start with "\/"/);
  });

  it('retries until containerd is listening', async () => {
    const received: Received[] = [];
    const pub = publisher();
    const delivered = pub.publish('/tasks/start', 'TaskStart', { containerId: 'late', pid: 1 });
    await new Promise((r) => setTimeout(r, 60)); // first attempt and maybe a retry fail (no socket)
    assert.equal(received.length, 0);
    servers.push(await fakeContainerd(socketPath, received));
    assert.equal(await delivered, true);
    assert.deepEqual(received.map((r) => r.event.containerId), ['late']);
  });

  it('reconnects after containerd restarts, keeping the order', async () => {
    const received: Received[] = [];
    const first = await fakeContainerd(socketPath, received);
    const pub = publisher();
    assert.equal(await pub.publish('/tasks/create', 'TaskCreate', { containerId: 'a' }), true);
    await first.close();
    const queued = ['b', 'c', 'd'].map((id) => pub.publish('/tasks/start', 'TaskStart', { containerId: id, pid: 1 }));
    await new Promise((r) => setTimeout(r, 50));
    servers.push(await fakeContainerd(socketPath, received));
    assert.deepEqual(await Promise.all(queued), [true, true, true]);
    assert.deepEqual(received.map((r) => r.event.containerId), ['a', 'b', 'c', 'd']);
  });

  it('drops an event after its retries and goes on with the next', async () => {
    const pub = publisher({ maxRetries: 1 });
    const started = Date.now();
    const dropped = pub.publish('/tasks/oom', 'TaskOOM', { containerId: 'x' });
    assert.equal(await dropped, false);
    assert.ok(Date.now() - started >= 40, 'waited 1 x retryDelay before the retry');
    const received: Received[] = [];
    servers.push(await fakeContainerd(socketPath, received));
    assert.equal(await pub.publish('/tasks/oom', 'TaskOOM', { containerId: 'y' }), true);
    assert.deepEqual(received.map((r) => r.event.containerId), ['y']);
  });

  it('close() drops what cannot be delivered in time and refuses new events', async () => {
    const pub = publisher();
    const pending = pub.publish('/tasks/paused', 'TaskPaused', { containerId: 'p' });
    await pub.close({ timeoutMs: 30 });
    assert.equal(await pending, false);
    assert.equal(await pub.publish('/tasks/resumed', 'TaskResumed', { containerId: 'p' }), false);
  });
});
