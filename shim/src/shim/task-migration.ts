// Tasks taken up from elsewhere: from a checkpoint (the restored init's stdio) and from a shim
// daemon that moved the pod's VM here (`stencil pod migrate`). A migrating task travels as a
// MigratingTask (JSON over the daemons' IPC channel): what containerd gave its Create, and its
// state. Its processes keep running in the VM; only the host side (FIFOs, tracking) is made anew.
import fs from 'node:fs';
import path from 'node:path';
import type { Pod, ProcessStdio, StdioMode } from '../pod/types.js';
import type { Logger } from '../util/log.js';
import { Code, RpcError, toRpcError } from '../rpc/errors.js';
import { Status, type Task, TaskProcess } from './process.js';
import { HostStdio, type StdioPaths, stdioMode } from './stdio.js';

export interface MigratingTask {
  id: string;
  bundle: string;
  rootfsDir: string;
  mountedRootfs: boolean;
  stdio: StdioPaths;
  /** CREATED (never started) or RUNNING. */
  started: boolean;
  paused: boolean;
  oomKillsReported: number;
}

/** The tasks as they would go, or an error naming why the pod cannot move now. */
export function tasksForMigration(tasks: Iterable<Task>, creating: number): MigratingTask[] {
  const refuse = (why: string) => new RpcError(Code.FailedPrecondition, `the pod cannot migrate: ${why}`);
  if (creating) throw refuse(`${creating} task(s) are being created`);
  const out: MigratingTask[] = [];
  for (const t of tasks) {
    if (t.init.exit) throw refuse(`task ${t.id} has exited: delete it first`);
    // An exec's stdio and exit tracking are not carried over (yet): refuse rather than lose them.
    const execs = [...t.execs.values()].filter((e) => !e.exit);
    if (execs.length) throw refuse(`task ${t.id} has ${execs.length} exec process(es) running`);
    if (t.init.status === Status.Created && t.init.starting) throw refuse(`task ${t.id} is starting`);
    out.push({
      id: t.id,
      bundle: t.bundle,
      rootfsDir: t.rootfsDir,
      mountedRootfs: t.mountedRootfs,
      stdio: t.init.stdio,
      started: t.init.status !== Status.Created,
      paused: t.paused,
      oomKillsReported: t.oomKillsReported,
    });
  }
  if (!out.length) throw refuse('it runs no task');
  return out;
}

/** The pod's containers as the destination shares them again (their files at the same guest paths). */
export function containersOf(tasks: MigratingTask[]): Array<{ id: string; spec: Record<string, unknown>; rootfs: string; stdio: StdioMode }> {
  return tasks.map((t) => {
    const file = path.join(t.bundle, 'config.json');
    let spec: Record<string, unknown>;
    try {
      spec = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new Error(`migrating task ${t.id}: cannot read its OCI spec ${file}: ${(err as Error).message}`, { cause: err });
    }
    return { id: t.id, spec, rootfs: t.rootfsDir, stdio: stdioMode(t.stdio) };
  });
}

/** A migrated task as this daemon tracks it: its FIFOs opened again and its output attached. */
export async function adoptTask(pod: Pod, m: MigratingTask, namespace: string, log: Logger): Promise<Task> {
  const init = new TaskProcess(m.id, '', m.stdio);
  init.io = await HostStdio.open(m.stdio, { containerId: m.id, namespace }, log);
  try {
    init.io.relay(await attachInitStdio(pod, m.id, stdioMode(m.stdio), true, log));
  } catch (err) {
    init.io.close();
    throw toRpcError(err, `attach the stdio of migrated task ${m.id}`, Code.Internal);
  }
  init.pid = process.pid;
  init.status = m.started ? Status.Running : Status.Created;
  return {
    id: m.id,
    bundle: m.bundle,
    rootfsDir: m.rootfsDir,
    mountedRootfs: m.mountedRootfs,
    init,
    execs: new Map(),
    paused: m.paused,
    oomKillsReported: m.oomKillsReported,
    restored: m.started,
  };
}

/** A task's init stdio relayed again from the pod (after holdStdio, when a migration failed). */
export async function reattachStdio(pod: Pod, t: Task, log: Logger): Promise<void> {
  t.init.io?.relay(await attachInitStdio(pod, t.id, stdioMode(t.init.stdio), true, log));
}

/**
 * The init's stdio streams. A restored or migrated container's stdin may have been closed before
 * (ctr closes it once its input ends): its output is attached again all the same.
 */
export async function attachInitStdio(pod: Pod, id: string, mode: StdioMode, restored: boolean, log: Logger): Promise<ProcessStdio> {
  try {
    return await pod.attachStdio(id, '', mode);
  } catch (err) {
    if (!restored || !mode.stdin || (err as { code?: unknown }).code !== 'FAILED_PRECONDITION') throw err;
    log.info('restored task: its stdin was closed before; attaching its output only', { id });
    return pod.attachStdio(id, '', { ...mode, stdin: false });
  }
}
