// Failpoint annotations: which are accepted, how bad ones are named, and what each action does to
// the pod (kill-shim is a SIGKILL of the process, checked in a child process).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import type { Pod } from '../pod/types.js';
import { Code, RpcError } from '../rpc/errors.js';
import { createLogger } from '../util/log.js';
import { FAILPOINT_ANNOTATION_PREFIX, type Failpoints, failpointsOf, hitFailpoint } from './failpoints.js';

const P = FAILPOINT_ANNOTATION_PREFIX;
const log = createLogger({ level: 'error' });

function refused(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof RpcError && err.code === Code.InvalidArgument && pattern.test(err.message));
}

describe('failpointsOf', () => {
  it('reads every step and action when enabled, ignoring other annotations', () => {
    const points = failpointsOf('c1', { [`${P}create.vm-ready`]: 'panic-guest', [`${P}exec.process-started`]: 'kill-container', 'io.kubernetes.cri.sandbox-id': 'x' }, true);
    assert.deepEqual([...points], [
      ['create.vm-ready', 'panic-guest'],
      ['exec.process-started', 'kill-container'],
    ]);
    assert.equal(failpointsOf('c1', undefined, true).size, 0);
    assert.equal(failpointsOf('c1', { a: 'b' }, false).size, 0);
  });

  it('refuses, naming the annotation: any failpoint while off, an unknown step, an unknown action', () => {
    refused(() => failpointsOf('c1', { [`${P}start.container-running`]: 'kill-shim' }, false), /task c1: annotation io\.stencil\.failpoint\.start\.container-running: failpoints are off/);
    refused(() => failpointsOf('c1', { [`${P}start.later`]: 'kill-shim' }, true), /annotation io\.stencil\.failpoint\.start\.later: unknown step "start\.later" \(steps: create\.vm-ready/);
    refused(() => failpointsOf('c1', { [`${P}delete.container-gone`]: 'reboot' }, true), /unknown action "reboot" \(actions: kill-shim, panic-guest, kill-container\)/);
    refused(() => failpointsOf('c1', { [`${P}delete.container-gone`]: 7 }, true), /unknown action 7/);
  });
});

describe('hitFailpoint', () => {
  function pod(calls: string[], ended: Promise<string>): Pod {
    return {
      injectNmi: () => void calls.push('nmi'),
      ended,
      signalProcess: async (id: string, execId: string, signal: number) => void calls.push(`signal ${id}/${execId} ${signal}`),
      waitProcess: async (id: string, execId: string) => {
        calls.push(`wait ${id}/${execId}`);
        return { exitStatus: 137, exitedAt: new Date() };
      },
    } as unknown as Pod;
  }
  const points = (step: string, action: string): Failpoints => failpointsOf('c1', { [`${P}${step}`]: action }, true);

  it('does nothing at a step without a failpoint, or for a task without any', async () => {
    const calls: string[] = [];
    await hitFailpoint({ pod: pod(calls, new Promise(() => undefined)), points: points('create.vm-ready', 'panic-guest'), step: 'start.container-running', id: 'c1', log });
    await hitFailpoint({ pod: pod(calls, new Promise(() => undefined)), points: undefined, step: 'start.container-running', id: 'c1', log });
    assert.deepEqual(calls, []);
  });

  it('panic-guest sends the NMI and goes on only once the VM has ended', async () => {
    const calls: string[] = [];
    let end!: (reason: string) => void;
    const hit = hitFailpoint({ pod: pod(calls, new Promise((r) => (end = r))), points: points('start.container-running', 'panic-guest'), step: 'start.container-running', id: 'c1', log });
    let done = false;
    void hit.then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(calls, ['nmi']);
    assert.equal(done, false, 'went on before the VM ended');
    end('triple-fault');
    await hit;
  });

  it("kill-container SIGKILLs the step's process and waits for its exit", async () => {
    const calls: string[] = [];
    await hitFailpoint({ pod: pod(calls, new Promise(() => undefined)), points: points('exec.process-started', 'kill-container'), step: 'exec.process-started', id: 'c1', execId: 'e1', log });
    assert.deepEqual(calls, ['signal c1/e1 9', 'wait c1/e1']);
  });

  it('kill-shim SIGKILLs the process it runs in', () => {
    const script = `
      const { hitFailpoint, failpointsOf } = await import(${JSON.stringify(new URL('./failpoints.js', import.meta.url).href)});
      const { createLogger } = await import(${JSON.stringify(new URL('../util/log.js', import.meta.url).href)});
      await hitFailpoint({ pod: {}, points: failpointsOf('c1', { '${P}create.vm-ready': 'kill-shim' }, true), step: 'create.vm-ready', id: 'c1', log: createLogger({ level: 'error' }) });
      await new Promise((r) => setTimeout(r, 5000));
      process.stdout.write('survived');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.signal, 'SIGKILL', `stdout ${r.stdout}, stderr ${r.stderr}`);
    assert.equal(r.stdout, '');
  });
});
