// What the ctr scenarios (shim-scenarios.ts, faults.test.ts) ask of a containerd instance about one
// task: its `ctr task ls` row, waiting for it to settle, and what is left once it has gone; and
// the containerd with the Stencil shim those scenarios share (useShimContainerd).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../shim/src/util/paths.js';
import { ContainerdInstance, type ContainerdVersion } from './containerd.js';
import { SLOW_HOST_TIMEOUTS } from './containerd-config.js';
import { EventWatch } from './ctr-events.js';
import { EMULATED_HOST_FAULT, GUEST_STOPPED_ANSWERING, REQUEST_UNANSWERED_BY_LIVE_GUEST, VM_EXIT_COUNTS } from './fault-retry.js';

/** How much of containerd's log a failed scenario quotes (withVmmFaults). */
const SCENARIO_LOG_LINES = 40;

/** The task's `ctr task ls` row: [id, pid, status], or undefined when there is no such task. */
export async function taskRow(c: ContainerdInstance, id: string): Promise<string[] | undefined> {
  return (await c.ctr(['task', 'ls'])).stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((fields) => fields[0] === id);
}

export async function taskStatus(c: ContainerdInstance, id: string): Promise<string | undefined> {
  return (await taskRow(c, id))?.[2];
}

/** Polls the task's status while it is one of `statuses` (undefined = no task), for at most `ms`. */
export async function waitWhile(c: ContainerdInstance, id: string, statuses: (string | undefined)[], ms: number): Promise<string | undefined> {
  let status = await taskStatus(c, id);
  for (const end = Date.now() + ms; statuses.includes(status) && Date.now() < end; status = await taskStatus(c, id)) await sleep(200);
  return status;
}

/**
 * ctr's own stdio FIFOs (/run/containerd/fifo/<n>/<id>-std*) of a task whose shim died: ctr
 * removes them only through a task it can load, and containerd dropped the dead shim's task.
 * They are ctr's, not the shim's, so a leak check leaves them out.
 */
function isCtrFifo(id: string, leak: string): boolean {
  return /^dir \/run\/containerd\/fifo\/\d+$/.test(leak) || ctrFifoOwner(leak) === id;
}

/** The task whose ctr stdio FIFO a leak line names, or undefined. */
function ctrFifoOwner(leak: string): string | undefined {
  return /^fifo \/run\/containerd\/fifo\/\d+\/(.+)-std(?:in|out|err)$/.exec(leak)?.[1];
}

/** c.leaks() without task `id`'s ctr FIFOs, once empty or after ~10 s; then removes those FIFOs. */
export async function leaksAfterDeadShim(c: ContainerdInstance, id: string): Promise<string[]> {
  let left: string[] = [];
  for (let i = 0; i < 50; i++) {
    left = (await c.leaks()).filter((l) => !isCtrFifo(id, l));
    if (left.length === 0) break;
    await sleep(200);
  }
  for (const l of await c.leaks()) {
    const dir = isCtrFifo(id, l) ? /^dir (\/run\/containerd\/fifo\/\d+)$/.exec(l)?.[1] : undefined;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
  return left;
}

/** The VMM's and the shim's reports of a guest lost the emulated host's way (fault-retry.ts). */
const FAULT_REPORTS = [EMULATED_HOST_FAULT, GUEST_STOPPED_ANSWERING, REQUEST_UNANSWERED_BY_LIVE_GUEST];
const isFaultReport = (line: string) => FAULT_REPORTS.some((re) => re.test(line));

/**
 * Those reports (a triple fault, a guest that stopped answering, an agent request left unanswered
 * while the guest answered pings) in containerd's log, from byte `since` on (the whole log by
 * default). Whether one shows the emulated host's fault is fault-retry.ts's to judge.
 */
export function vmmFaults(c: ContainerdInstance, since = 0): string[] {
  return logSince(c, since).split('\n').filter(isFaultReport);
}

/**
 * The last `count` of `lines` (containerd's log, the shims' through it), each cut at 400
 * characters, leaving out the fault reports and VM exit counts: those are vmmFaults' to quote, and
 * a failure's retry is judged on what they say, never on this context.
 */
function logContext(lines: string[], count: number): string[] {
  return lines
    .filter((l) => l.trim() !== '' && !isFaultReport(l) && !VM_EXIT_COUNTS.test(l))
    .slice(-count)
    .map((l) => (l.length > 400 ? `${l.slice(0, 400)}...` : l));
}

/**
 * containerd's log tail, and above it any such report (vmmFaults): a test that fails because its
 * guest was lost that way must say so (run-tests' emulated-host retry reads the failure text),
 * even when the report has scrolled out of the tail.
 */
export function logWithFaults(c: ContainerdInstance, lines = 30, since = 0): string {
  const faults = vmmFaults(c, since);
  return `${faults.length ? `VMM faults in containerd's log:\n${faults.slice(-3).join('\n')}\n` : ''}containerd's log:\n${c.logTail(lines)}`;
}

/**
 * Runs a scenario; if it fails, its error message gains the reports vmmFaults finds in the part
 * of containerd's log written meanwhile, for the same reason as logWithFaults, and the last lines
 * of that part: a call that hung (a CRI deadline) says nothing of where it waited.
 */
export async function withVmmFaults<T>(c: ContainerdInstance, scenario: () => Promise<T>): Promise<T> {
  const since = logOffset(c);
  try {
    return await scenario();
  } catch (err) {
    if (err instanceof Error) {
      const lines = logSince(c, since).split('\n');
      const faults = lines.filter(isFaultReport);
      if (faults.length) err.message += `\nVMM faults in containerd's log meanwhile:\n${faults.slice(-3).join('\n')}`;
      const context = logContext(lines, SCENARIO_LOG_LINES);
      if (context.length) err.message += `\ncontainerd's log meanwhile (its last ${context.length} other lines):\n${context.join('\n')}`;
    }
    throw err;
  }
}

/**
 * Scenarios (node:test `it`) whose failures gain, through withVmmFaults, the VMM fault reports
 * containerd logged while they ran. `containerd` is called when a scenario runs: suites start
 * their containerd in before().
 */
export function vmmFaultScenario(containerd: () => ContainerdInstance) {
  return (name: string, fn: (t: TestContext) => Promise<void>, options: { skip?: string | false } = {}) =>
    it(name, options, (t) => withVmmFaults(containerd(), () => fn(t)));
}

/** What `stencil pod status --json` says of the pod that runs container `id`. */
export interface PodStatus {
  pid: number;
  vmState: string;
  monitor: string;
  containers: string[];
}

/** `stencil pod status ID --json` against this containerd (in `namespace`, default the instance's); throws with its stderr if it fails. */
export async function podStatus(c: ContainerdInstance, id: string, namespace = c.namespace): Promise<PodStatus> {
  const r = await stencilPod(c, ['status', id], namespace);
  if (r.code !== 0) throw new Error(`stencil pod status ${id} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as PodStatus;
}

/** `stencil pod migrate ID --to TO --json` against this containerd: its exit code and output (a refusal is for the caller to check). */
export function podMigrate(c: ContainerdInstance, id: string, to: string, namespace = c.namespace): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return stencilPod(c, ['migrate', id, '--to', to], namespace);
}

function stencilPod(c: ContainerdInstance, args: string[], namespace: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(path.join(repoRoot(), 'bin', 'stencil'), ['pod', ...args, '--namespace', namespace, '--address', c.address, '--json']);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('error', reject);
    p.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** containerd's log from byte `since` (a logOffset) on. */
export function logSince(c: ContainerdInstance, since: number): string {
  return fs.readFileSync(c.logPath).subarray(since).toString('utf8');
}

/** containerd's log size now: where a scenario's part of it starts (logSince, logWithFaults' `since`). */
export function logOffset(c: ContainerdInstance): number {
  return fs.statSync(c.logPath).size;
}

/** Whatever state task `id` is in: SIGKILL if it lives, `ctr task delete --force`, `ctr containers rm` (errors ignored). */
export async function removeTask(c: ContainerdInstance, id: string): Promise<void> {
  const live = ['RUNNING', 'CREATED', 'PAUSED'];
  if (live.includes((await taskStatus(c, id)) ?? '')) await c.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
  await waitWhile(c, id, live, 10_000);
  await c.ctr(['task', 'delete', '--force', id]);
  await c.ctr(['containers', 'rm', id]);
}

/**
 * Isolation between scenarios sharing one containerd: after a scenario, whatever it left (it has
 * already failed its own leak check) is taken away so the next one starts clean: tasks killed and
 * deleted, containers removed, the instance's shim processes killed, ctr's FIFOs removed (also
 * those of a container the scenario had removed already).
 * Returns what had to go ([] after a clean scenario).
 */
export async function sweep(c: ContainerdInstance): Promise<string[]> {
  const before = await c.leaks();
  if (before.length === 0) return [];
  const containers = async () => (await c.ctr(['containers', 'ls', '-q'])).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const ids = await containers();
  // Twice: a task whose shim no longer answers goes only once its shim has been killed.
  for (let round = 0; round < 2; round++) {
    for (const id of await containers()) await removeTask(c, id);
    for (const pid of c.shimPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await sleep(1000);
  }
  // ctr's FIFOs of a container already gone (its scenario removed it, then failed) go too: left,
  // they would fail every later scenario's leak check.
  const fifoOwners = before.map(ctrFifoOwner).filter((o): o is string => o !== undefined);
  for (const id of new Set([...ids, ...fifoOwners])) await leaksAfterDeadShim(c, id);
  return before;
}

/** A containerd running the Stencil shim for ctr scenarios, once the suite's `before` has run. */
export interface ShimContainerd {
  c: ContainerdInstance;
  /** busybox, imported. */
  image: string;
  events: EventWatch;
}

/**
 * Registers, in the calling suite, what every ctr scenario suite needs: before it, a containerd of
 * `version` with the Stencil shim on its PATH and `config()` as STENCIL_CONFIG (called then, so an
 * earlier `before` may write it), busybox imported and an event watch, handed to `started`; after
 * each test, a sweep of what a failed one left; after the suite, containerd's log tail, and its stop.
 */
export function useShimContainerd(version: ContainerdVersion, config: () => string, started: (s: ShimContainerd) => void): void {
  let c: ContainerdInstance | undefined;
  let events: EventWatch | undefined;
  before(async () => {
    c = await ContainerdInstance.start({
      version,
      extraPath: [path.join(repoRoot(), 'bin')],
      env: { STENCIL_CONFIG: config() },
      configExtra: SLOW_HOST_TIMEOUTS,
    });
    const image = await c.importBusybox();
    events = await EventWatch.start(c);
    started({ c, image, events });
  });
  after(async () => {
    events?.stop();
    if (c) process.stdout.write(`# --- containerd ${version} log tail ---\n${c.logTail(80).replace(/^/gm, '# ')}\n`);
    await c?.stop();
  });
  // A test that failed has said what it left; the next one must not fail because of it.
  afterEach(async () => {
    if (!c) return;
    const swept = await sweep(c);
    if (swept.length) process.stdout.write(`# swept after the test: ${swept.join('; ')}\n`);
  });
}
