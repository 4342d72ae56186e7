// The hung-guest decision: a timed-out request, then one ping (shared by concurrent timeouts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AgentClient } from '../agent/client.js';
import { AgentCallError, AgentTimeoutError } from '../agent/errors.js';
import { PodVmError } from './pod-errors.js';
import { healthCheckTimeoutMs, UnansweredGuestWatch } from './unanswered-guest.js';

const timeout = (rpc: string) => new AgentTimeoutError('DEADLINE_EXCEEDED', 'no answer within 60000 ms', { rpc, containerId: 'c1' });

/** An agent whose ping answers (or times out) after a tick, counting the pings. */
function agent(pingAnswers: boolean) {
  const fake = {
    pings: 0,
    ping: async (opts: { timeoutMs?: number }) => {
      fake.pings++;
      assert.equal(opts.timeoutMs, 50);
      await new Promise((resolve) => setImmediate(resolve));
      if (!pingAnswers) throw timeout('Ping');
      return { agentVersion: 'test' };
    },
  };
  return fake;
}

describe('UnansweredGuestWatch', () => {
  it('a request that times out while the guest still answers a ping fails alone, with its own timeout, saying so with the VM note', async () => {
    const hung: string[] = [];
    const watch = new UnansweredGuestWatch((what) => (hung.push(what), 'hung'), 50, () => '; VM exits: {"exits":9}');
    const a = agent(true);
    await assert.rejects(watch.request(a as unknown as AgentClient, () => Promise.reject(timeout('Stats'))), (err: unknown) => {
      assert.ok(err instanceof AgentTimeoutError, String(err));
      assert.equal(err.message, 'agent Stats(c1): no answer within 60000 ms, though the guest answered a ping; VM exits: {"exits":9}');
      return true;
    });
    assert.deepEqual(hung, []);
    assert.equal(a.pings, 1);
  });

  it('a request that times out and a ping that does too: the guest is hung, once, and every such request fails with the reason', async () => {
    const hung: string[] = [];
    const watch = new UnansweredGuestWatch((what) => (hung.push(what), `the guest stopped answering (${what})`), 50);
    const a = agent(false);
    const requests = ['SignalProcess', 'Stats'].map((rpc) => watch.request(a as unknown as AgentClient, () => Promise.reject(timeout(rpc))));
    for (const r of requests) {
      await assert.rejects(r, (err: unknown) => {
        assert.ok(err instanceof PodVmError && err.code === 'UNAVAILABLE', String(err));
        assert.match(err.message, /^the guest stopped answering \(agent SignalProcess\(c1\): no answer within 60000 ms, nor a ping within 50 ms\)$/);
        assert.ok(err.cause instanceof AgentTimeoutError);
        return true;
      });
    }
    assert.equal(a.pings, 1, 'concurrent timeouts share one ping');
    assert.equal(hung.length, 1);
  });

  it('a silence with another cause (the VM paused on purpose: onHung says no) fails the request alone, with its own timeout', async () => {
    const watch = new UnansweredGuestWatch(() => undefined, 50, () => assert.fail('the guest answered no ping'));
    await assert.rejects(watch.request(agent(false) as unknown as AgentClient, () => Promise.reject(timeout('Stats'))), (err: unknown) => {
      assert.ok(err instanceof AgentTimeoutError, String(err));
      assert.equal(err.message, 'agent Stats(c1): no answer within 60000 ms');
      return true;
    });
  });

  it('any other failure, or a success, goes through without a ping', async () => {
    const watch = new UnansweredGuestWatch(() => assert.fail('not hung'), 50);
    const a = agent(false);
    const refused = new AgentCallError('NOT_FOUND', 'no such container', { rpc: 'Stats', containerId: 'c1' });
    await assert.rejects(watch.request(a as unknown as AgentClient, () => Promise.reject(refused)), (err) => err === refused);
    assert.equal(await watch.request(a as unknown as AgentClient, async () => 7), 7);
    assert.equal(a.pings, 0);
  });

  it('gives the ping half the request timeout, at least a second', () => {
    assert.equal(healthCheckTimeoutMs(60_000), 30_000);
    assert.equal(healthCheckTimeoutMs(20_000), 10_000);
    assert.equal(healthCheckTimeoutMs(1_000), 1_000);
  });
});
