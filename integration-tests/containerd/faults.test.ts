// Faults at each step of a task's life, under real containerd driven by real ctr, with template
// clones: the shim's failpoints (shim/src/shim/failpoints.ts, on with [runtime] failpoints = true)
// SIGKILL the shim daemon, panic the guest kernel or SIGKILL the container's process while Create,
// Start, an exec's Start or Delete is half-done; and a container sharing the guest's PID
// namespace kill -9s the guest agent. Each scenario checks what containerd reported (the step's
// error or the process's exit), then that `ctr task delete` and `ctr containers rm` recover and
// that nothing is left behind: no process, socket, mount, RAM file or state directory.
//
// One containerd version (STENCIL_FAULTS_CONTAINERD, default 2.1): the steps are the shim's own;
// shim-scenarios.ts covers both versions' protocols with the same faults on a running task.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeBusyboxRootfs, ociSpec } from '../../shim/src/agent/testing/busybox-oci.js';
import type { PoolStatus } from '../../shim/src/cli/template-report.js';
import { FAILPOINT_ANNOTATION_PREFIX, type FailpointAction, type FailpointStep } from '../../shim/src/shim/failpoints.js';
import { repoRoot } from '../../shim/src/util/paths.js';
import { ContainerdInstance, type ContainerdVersion } from '../lib/containerd.js';
import { slowHostTimeouts } from '../lib/containerd-config.js';
import { EventWatch } from '../lib/ctr-events.js';
import { leaksAfterDeadShim, logOffset, logSince, podStatus, taskStatus as taskStatusOf, useShimContainerd, waitWhile as waitWhileOf } from '../lib/ctr-tasks.js';
import { ensureShimTemplate, writeShimConfig } from '../lib/template.js';

const RUNTIME = 'io.containerd.stencil.v2';
const VERSION = (process.env.STENCIL_FAULTS_CONTAINERD ?? '2.1') as ContainerdVersion;
const AGENT_REQUEST_TIMEOUT_MS = 20_000;

interface FaultCase {
  step: FailpointStep;
  action: FailpointAction;
  /** How the ctr command that drives the step ends: 'error' (it fails, non-zero) or its exit code. */
  ctr: 'error' | number;
  /** The exit status of the task's init in its TaskExit, when the fault decides it. */
  initExit?: number;
}

const CASES: FaultCase[] = [
  { step: 'create.vm-ready', action: 'kill-shim', ctr: 'error' },
  { step: 'create.vm-ready', action: 'panic-guest', ctr: 'error' },
  { step: 'create.container-made', action: 'kill-shim', ctr: 'error' },
  { step: 'create.container-made', action: 'kill-container', ctr: 'error', initExit: 137 },
  { step: 'start.container-running', action: 'kill-shim', ctr: 'error' },
  { step: 'start.container-running', action: 'panic-guest', ctr: 0, initExit: 255 },
  { step: 'exec.added', action: 'panic-guest', ctr: 'error', initExit: 255 },
  { step: 'exec.process-started', action: 'kill-shim', ctr: 'error' },
  { step: 'exec.process-started', action: 'panic-guest', ctr: 255, initExit: 255 },
  { step: 'exec.process-started', action: 'kill-container', ctr: 137 },
  { step: 'delete.container-gone', action: 'kill-shim', ctr: 'error' },
  { step: 'delete.container-gone', action: 'panic-guest', ctr: 0, initExit: 0 },
];

describe(`faults injected under containerd ${VERSION} with the Stencil shim`, () => {
  let c: ContainerdInstance;
  let image: string;
  let events: EventWatch;
  let config: string;
  let templateKey: string;
  let servedBefore: number;

  /** The shim template's entry in `stencil pool status --json` with the shim's configuration. */
  function poolTemplate() {
    const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'stencil'), 'pool', 'status', '--json', '--config', config], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `stencil pool status: ${r.stderr}`);
    const template = (JSON.parse(r.stdout) as PoolStatus).templates.find((t) => t.key === templateKey);
    assert.ok(template, `template ${templateKey} is not in stencil pool status: ${r.stdout}`);
    return template;
  }

  before(async () => {
    const made = await ensureShimTemplate();
    process.stdout.write(`# shim template ${made.record.key}: ${made.built ? 'built' : 'reused'} in ${made.ms} ms\n`);
    // Requests time out sooner than by default, so the hung guest's case takes ~30 s, not ~70 s.
    config = writeShimConfig('shim-failpoints.toml', { failpoints: true, agentRequestTimeoutMs: AGENT_REQUEST_TIMEOUT_MS });
    templateKey = made.record.key;
    servedBefore = poolTemplate().clonesServed;
  });
  useShimContainerd(VERSION, () => config, (started) => ({ c, image, events } = started));

  const taskStatus = (id: string) => taskStatusOf(c, id);
  const waitWhile = (id: string, statuses: (string | undefined)[], ms: number) => waitWhileOf(c, id, statuses, ms);

  /**
   * What a user does after a fault: kill what still runs, `ctr task delete`, `ctr containers rm`.
   * Each must work, and afterwards nothing may be left (but ctr's own FIFOs: leaksAfterDeadShim).
   */
  async function recoverAndCheck(id: string): Promise<void> {
    if (['RUNNING', 'CREATED', 'PAUSED'].includes((await taskStatus(id)) ?? '')) await c.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
    const settled = await waitWhile(id, ['RUNNING', 'CREATED', 'PAUSED'], 30_000);
    assert.ok(!['RUNNING', 'CREATED', 'PAUSED'].includes(settled ?? ''), `task ${id} still ${settled} after SIGKILL`);
    for (let i = 0; i < 2 && (await taskStatus(id)) !== undefined; i++) await c.ctr(['task', 'delete', id]);
    assert.equal(await taskStatus(id), undefined, `ctr task delete ${id} left the task`);
    const rm = await c.ctr(['containers', 'rm', id]);
    assert.equal(rm.code, 0, `ctr containers rm ${id}: ${rm.stderr}`);
    assert.deepEqual(await leaksAfterDeadShim(c, id), [], `left behind after recovering ${id}`);
  }

  const initExitStatus = (id: string) =>
    events
      .taskEvents(id)
      .filter((e) => e.topic === '/tasks/exit' && (e.body.id === id || e.body.id === undefined))
      .map((e) => Number(e.body.exit_status ?? 0));

  for (const fault of CASES) {
    it(`${fault.action} at ${fault.step}: ctr ${fault.ctr === 'error' ? 'fails' : `ends ${fault.ctr}`}${fault.initExit !== undefined ? `, the init exits ${fault.initExit}` : ''}; delete recovers, nothing leaks`, async () => {
      const id = `f-${fault.step.replace('.', '-')}-${fault.action}`;
      const annotation = ['--annotation', `${FAILPOINT_ANNOTATION_PREFIX}${fault.step}=${fault.action}`];
      const run = (args: string[]) => c.ctr(['run', '-d', '--runtime', RUNTIME, ...annotation, image, id, ...args]);
      try {
        let r: { code: number | null; stdout: string; stderr: string };
        const phase = fault.step.split('.')[0];
        if (phase === 'create' || phase === 'start') {
          r = await run(['sleep', '1000']);
        } else if (phase === 'exec') {
          const started = await run(['sleep', '1000']);
          assert.equal(started.code, 0, started.stderr);
          r = await c.ctr(['task', 'exec', '--exec-id', 'e1', id, 'sleep', '1000'], { timeoutMs: 120_000 });
        } else {
          const started = await run(['true']);
          assert.equal(started.code, 0, started.stderr);
          assert.equal(await waitWhile(id, ['RUNNING', 'CREATED'], 30_000), 'STOPPED');
          r = await c.ctr(['task', 'delete', id], { timeoutMs: 120_000 });
        }
        const said = `ctr: code ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`;
        if (fault.ctr === 'error') assert.ok(r.code !== 0 && r.stderr.trim() !== '', `the step should have failed with an error: ${said}`);
        else assert.equal(r.code, fault.ctr, said);
        process.stdout.write(`# ${said}\n`);
        const hit = c.logTail(400).split('\n').some((l) => l.includes('"message":"failpoint hit"') && l.includes(`"id":"${id}"`) && l.includes(`"step":"${fault.step}"`));
        assert.ok(hit, `the shim's failpoint hit for ${id} is not in containerd's log`);
        if (fault.action === 'panic-guest') assert.match(c.logTail(400), /Kernel panic - not syncing: NMI/, "the guest's panic is not in containerd's log");
        if (fault.initExit !== undefined) {
          await waitWhile(id, ['RUNNING', 'CREATED'], 30_000);
          let exits = initExitStatus(id);
          for (let i = 0; i < 50 && exits.length === 0; i++, exits = initExitStatus(id)) await sleep(200);
          assert.deepEqual(exits, [fault.initExit], JSON.stringify(events.taskEvents(id)));
          if (phase !== 'delete') {
            // What a user tries next: an exec into the task whose init is gone must fail, not hang.
            const late = await c.ctr(['task', 'exec', '--exec-id', 'late', id, 'true'], { timeoutMs: 60_000 });
            assert.ok(late.code !== 0 && late.stderr.trim() !== '', `an exec into the exited task: code ${late.code}, stderr ${JSON.stringify(late.stderr)}`);
          }
        }
      } finally {
        await recoverAndCheck(id);
      }
    });
  }

  /** A busybox container running `script` in the guest's own PID namespace (no `pid` namespace, as CRI's hostPID): its spec file under dir. */
  function inGuestPidNamespace(dir: string, script: string): string {
    const spec = ociSpec(makeBusyboxRootfs(path.join(dir, 'rootfs')), { args: ['sh', '-c', script] });
    const linux = spec.linux as { namespaces: { type: string }[] };
    linux.namespaces = linux.namespaces.filter((ns) => ns.type !== 'pid');
    const specFile = path.join(dir, 'config.json');
    fs.writeFileSync(specFile, JSON.stringify(spec));
    return specFile;
  }

  it("kill -9 of the guest agent, by a container sharing the guest's PID namespace: the task exits 255, the shim says why, delete recovers, nothing leaks", async () => {
    const id = 'agent-killer';
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-faults-'));
    try {
      const specFile = inGuestPidNamespace(dir, 'sleep 1; kill -9 $(pidof stencil-agent); sleep 1000');
      const r = await c.ctr(['run', '-d', '--runtime', RUNTIME, '--config', specFile, id]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await waitWhile(id, ['RUNNING', 'CREATED'], 60_000), 'STOPPED', `containerd's log:\n${c.logTail(40)}`);
      const exit = (await events.waitFor(id, '/tasks/exit', 30_000)).find((e) => e.topic === '/tasks/exit');
      assert.equal(exit?.body.exit_status, 255, JSON.stringify(exit));
      // The exit is reported when the agent's connection breaks; the VM powers off a moment later.
      for (let i = 0; i < 100 && !/agent exited with status 137/.test(c.logTail(400)); i++) await sleep(200);
      assert.match(c.logTail(400), /agent exited with status 137/, "the guest's report of its agent's death is not in containerd's log");
    } finally {
      await recoverAndCheck(id);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a guest that stops answering (its agent SIGSTOPped by a container sharing the guest's PID namespace): kill -9 still ends the task (255), the shim says why and pauses the VM, delete recovers, nothing leaks", async () => {
    const id = 'unanswering';
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-faults-'));
    try {
      const specFile = inGuestPidNamespace(dir, 'echo stopping; sleep 1; kill -STOP $(pidof stencil-agent); sleep 1000');
      const log = path.join(dir, 'out.log');
      const r = await c.ctr(['run', '-d', '--log-uri', `file://${log}`, '--runtime', RUNTIME, '--config', specFile, id]);
      assert.equal(r.code, 0, r.stderr);
      // Its output passes through the agent: "stopping" arrives, then (1 s on) the agent stops.
      const said = () => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('stopping');
      for (let i = 0; i < 150 && !said(); i++) await sleep(200);
      assert.ok(said(), "the container's output never came");
      await sleep(3_000);
      assert.equal(await taskStatus(id), 'RUNNING', 'State must not need the agent');
      const t0 = Date.now();
      const kill = await c.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
      const took = Date.now() - t0;
      assert.equal(kill.code, 0, `ctr task kill: ${kill.stderr}\n${c.logTail(40)}`);
      assert.ok(took >= AGENT_REQUEST_TIMEOUT_MS, `the kill returned after ${took} ms, before the request could time out`);
      assert.equal((await podStatus(c, id)).vmState, 'paused', 'the hung VM was left running (burning CPU)');
      assert.equal(await waitWhile(id, ['RUNNING'], 30_000), 'STOPPED');
      const exit = (await events.waitFor(id, '/tasks/exit', 30_000)).find((e) => e.topic === '/tasks/exit');
      assert.equal(exit?.body.exit_status, 255, JSON.stringify(exit));
      assert.match(
        c.logTail(400),
        /the guest of pod \S+ stopped answering \(agent SignalProcess\(unanswering\): no answer within 20000 ms, nor a ping within 10000 ms\); its vCPUs are paused; VM exits: /,
        "the shim's reason is not in containerd's log",
      );
    } finally {
      await recoverAndCheck(id);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('containerd restarted while the shim cannot answer (stopped): containerd gives up on it, the daemon sees the bundle go, kills the container and exits with its VM; nothing leaks', async () => {
    const id = 'forgotten';
    let stopped: number | undefined;
    try {
      const r = await c.ctr(['run', '-d', '--runtime', RUNTIME, image, id, 'sleep', '1000']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await taskStatus(id), 'RUNNING');
      const shim = c.shimPids(id);
      assert.equal(shim.length, 1, `the shim daemon of ${id}: ${shim.join(', ')}`);
      events.stop();
      const logBefore = logOffset(c);
      // As a loaded host makes a shim miss containerd's load timeout: the stopped daemon's socket
      // still accepts, but nothing answers, so containerd runs the shim's delete, reports the task
      // exited and removes its bundle while the daemon still runs the container.
      stopped = shim[0];
      process.kill(stopped, 'SIGSTOP');
      await c.restart(90_000, { configExtra: slowHostTimeouts({ shimLoad: '3s' }) });
      process.kill(stopped, 'SIGCONT');
      stopped = undefined;
      events = await EventWatch.start(c);
      const log = () => logSince(c, logBefore);
      assert.equal(await taskStatus(id), undefined, `containerd reconnected to a stopped shim:\n${log()}`);
      assert.match(log(), /unable to load shim[^\n]*forgotten/, 'containerd did not report giving up on the shim');
      for (let i = 0; i < 100 && !log().includes('containerd no longer knows this task'); i++) await sleep(200);
      assert.match(log(), /containerd no longer knows this task \(its bundle is gone\)/, `the daemon did not notice:\n${c.logTail(30)}`);
      // Its idle exit (30 s after its last task) takes the VM away.
      for (let i = 0; i < 300 && c.shimPids(id).length > 0; i++) await sleep(200);
      assert.deepEqual(c.shimPids(id), [], 'the shim daemon of the forgotten task still runs');
    } finally {
      if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
      // (containerd keeps the 3 s load timeout: it matters only when containerd starts, and no other shim runs.)
      await recoverAndCheck(id);
    }
  });

  it("a daemon exit that outlasts its grace (exit_grace_ms = 1 in the container's runtime configuration): after delete the daemon forces itself out and removes its socket, RAM file and state directory; nothing leaks", async () => {
    const id = 'forced-exit';
    const graceConfig = writeShimConfig('shim-exit-grace.toml', { exitGraceMs: 1 });
    try {
      const logBefore = logOffset(c);
      const r = await c.ctr(['run', '-d', '--runtime', RUNTIME, '--runtime-config-path', graceConfig, image, id, 'sleep', '1000']);
      assert.equal(r.code, 0, r.stderr);
      const shim = c.shimPids(id);
      assert.equal(shim.length, 1, `the shim daemon of ${id}: ${shim.join(', ')}`);
      // The one pod running: `stencil pool status` sees its clone, though the daemon has its own mount namespace.
      assert.equal(poolTemplate().liveClones.processes, 1, 'stencil pool status does not count the running clone');
      await c.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
      assert.equal(await waitWhile(id, ['RUNNING'], 30_000), 'STOPPED');
      // Delete, then (containerd 1.x, and 2.x when it does) Shutdown, or else the idle exit 30 s on:
      // either way the daemon's exit takes longer than 1 ms, the pod's VM being torn down.
      const del = await c.ctr(['task', 'delete', id]);
      assert.equal(del.code, 0, `ctr task delete: ${del.stderr}`);
      for (let i = 0; i < 300 && c.shimPids(id).length > 0; i++) await sleep(200);
      assert.deepEqual(c.shimPids(id), [], 'the shim daemon still runs');
      // Only this daemon has a 1 ms grace.
      assert.match(logSince(c, logBefore), /"message":"shim daemon forced out"[^\n]*"why":"still [a-z ]+ after 1 ms"/, `the daemon did not force its exit:\n${c.logTail(40)}`);
      assert.doesNotMatch(logSince(c, logBefore), /the forced exit left the pod state directory/);
    } finally {
      await recoverAndCheck(id);
    }
  });

  it('stencil pool status afterwards: no clone of the template left running, every faulted pod counted as served', () => {
    const template = poolTemplate();
    assert.equal(template.liveClones.processes, 0, JSON.stringify(template.liveClones));
    assert.ok(template.clonesServed >= servedBefore + CASES.length + 2, `clones served: ${servedBefore} before, ${template.clonesServed} after`);
  });
});
