import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { ContainerdInstance } from './containerd.js';
import { withVmmFaults } from './ctr-tasks.js';
import { pageFaultStorm } from './fault-retry.js';

const UNANSWERED =
  '{"err":"agent KillContainer(c): no answer within 60000 ms, though the guest answered a ping; VM exits: {\\"kvmVcpuStats\\":[{\\"exits\\":250000,\\"pf_guest\\":240000}]}","level":"warn"}';

/** withVmmFaults around a scenario that appends `during` to containerd's log, then fails. */
async function failedScenario(before: string[], during: string[]): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctr-tasks-test-'));
  try {
    const logPath = path.join(dir, 'containerd.log');
    fs.writeFileSync(logPath, before.map((l) => `${l}\n`).join(''));
    const c = { logPath } as ContainerdInstance;
    const err = await withVmmFaults(c, async () => {
      fs.appendFileSync(logPath, during.map((l) => `${l}\n`).join(''));
      throw new Error('CRI StopPodSandbox failed: DEADLINE_EXCEEDED');
    }).then(() => undefined, (e: Error) => e);
    assert.ok(err);
    return err.message;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('withVmmFaults', () => {
  it("adds the last lines containerd logged during the failed scenario, none from before it", async () => {
    const during = Array.from({ length: 50 }, (_, i) => `during ${i}`);
    const message = await failedScenario(['before the scenario'], during);
    assert.match(message, /^CRI StopPodSandbox failed: DEADLINE_EXCEEDED\ncontainerd's log meanwhile \(its last 40 other lines\):\nduring 10\n/);
    assert.ok(message.endsWith('\nduring 49'));
    assert.doesNotMatch(message, /before the scenario|during 9\n/);
  });

  it('cuts long lines', async () => {
    const message = await failedScenario([], ['x'.repeat(1000)]);
    assert.ok(message.endsWith(`${'x'.repeat(400)}...`));
  });

  it('quotes an unanswered request with its exit counts once, among the fault reports, so a storm is judged on it alone', async () => {
    const message = await failedScenario([], ['shim: kill', UNANSWERED, 'shim: after']);
    assert.equal(message.split('no answer within 60000 ms').length, 2);
    assert.match(message, /VMM faults in containerd's log meanwhile:\n.*no answer within 60000 ms/);
    assert.match(message, /other lines\):\nshim: kill\nshim: after$/);
    assert.ok(pageFaultStorm(message));
  });

  it('leaves VM exit counts outside a fault report out of the context: they must not make a failure look like a storm', async () => {
    const message = await failedScenario([], ['{"msg":"exit stats","kvmVcpuStats":[{"exits":250000,"pf_guest":240000}]}', 'the last line']);
    assert.doesNotMatch(message, /pf_guest/);
    assert.equal(pageFaultStorm(message), undefined);
  });

  it("returns a passing scenario's result", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctr-tasks-test-'));
    try {
      fs.writeFileSync(path.join(dir, 'containerd.log'), 'a line\n');
      assert.equal(await withVmmFaults({ logPath: path.join(dir, 'containerd.log') } as ContainerdInstance, async () => 7), 7);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
