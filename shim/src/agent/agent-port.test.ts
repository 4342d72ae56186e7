// PORT connections (port forwarding): the agent binary on this host over --unix connects to TCP
// servers of this test on 127.0.0.1 (the agent's namespace is the test's here; in a VM it is
// the pod's).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { rejectsWith, type RunningAgent, startAgent } from './testing/agent-harness.js';
import type { AgentClient } from './client.js';

function listen(onConnection: (s: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, onConnection);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;

/** Everything the stream yields until its end. */
function readAll(stream: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

describe('agent port connections', () => {
  let agent: RunningAgent;
  let client: AgentClient;
  const servers: net.Server[] = [];
  before(async () => {
    agent = await startAgent();
    client = await agent.client();
  });
  after(async () => {
    for (const s of servers) s.close();
    client?.close();
    await agent?.stop();
  });

  it('carries bytes both ways with half-closes: the server sees EOF, then answers and ends', async () => {
    const server = await listen((s) => {
      const got: Buffer[] = [];
      s.on('data', (c: Buffer) => got.push(c));
      s.on('end', () => s.end(`got ${Buffer.concat(got).toString().toUpperCase()}`));
    });
    servers.push(server);
    const stream = await client.openPort(portOf(server));
    const reply = readAll(stream);
    stream.end('hello guest');
    assert.equal((await reply).toString(), 'got HELLO GUEST');
  });

  it('moves megabytes each way byte-exact, with a server that reads slowly', async () => {
    const up = crypto.randomBytes(3 << 20);
    const down = crypto.randomBytes(5 << 20);
    const received: Buffer[] = [];
    const server = await listen((s) => {
      s.write(down);
      s.on('data', (c: Buffer) => {
        received.push(c);
        s.pause();
        setTimeout(() => s.resume(), 1);
      });
      s.on('end', () => s.end());
    });
    servers.push(server);
    const stream = await client.openPort(portOf(server));
    const reply = readAll(stream);
    stream.end(up);
    assert.ok((await reply).equals(down), 'what the server sent arrived unchanged');
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(Buffer.concat(received).equals(up), 'what the host sent arrived unchanged');
  });

  it('refuses a closed port with NOT_FOUND naming it, and a port out of range', async () => {
    const closed = await listen(() => undefined);
    const port = portOf(closed);
    await new Promise((r) => closed.close(r));
    await rejectsWith(client.openPort(port), (err) => {
      assert.equal(err.code, 'NOT_FOUND');
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}.*refused`, 'i'));
    });
    for (const bad of [0, 65536]) await rejectsWith(client.openPort(bad), (err) => assert.equal(err.code, 'INVALID_ARGUMENT'));
    assert.ok((await client.ping()).agentVersion, 'the control connection still serves');
  });

  it("passes a reset by the guest's server on as an error, and a destroy by the host on as a reset", async () => {
    let serverSide: net.Socket | undefined;
    const closedOnServer = new Promise<void>((resolve) => {
      void listen((s) => {
        serverSide = s;
        s.on('error', () => undefined);
        s.on('close', () => resolve());
      }).then((srv) => {
        servers.push(srv);
        void client.openPort(portOf(srv)).then((stream) => {
          stream.on('error', () => undefined);
          setTimeout(() => stream.destroy(), 50);
        });
      });
    });
    await closedOnServer;
    assert.ok(serverSide, 'the guest-side server got the connection');

    const server = await listen((s) => setTimeout(() => s.resetAndDestroy(), 50));
    servers.push(server);
    const stream = await client.openPort(portOf(server));
    await assert.rejects(readAll(stream), /reset/);
  });
});
