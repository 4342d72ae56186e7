// Tasks containerd has given up on while their daemon still runs them. A restarted containerd gives
// each shim a few seconds to answer (io.containerd.timeout.shim.load, 5 s by default); a daemon that
// was only slow (a loaded host) is then taken for dead: containerd runs the shim's `delete`, reports
// the task exited and removes its bundle. Nobody could see or stop the container after that, and
// its VM would run on. So the daemon looks for its tasks' bundles now and then, and ends a task
// whose bundle has gone as a Delete from containerd would have (runc's `delete --force` kills the
// container in that case too); with no task left the daemon's idle exit takes the VM away.
import fs from 'node:fs';
import { Code, RpcError } from '../rpc/errors.js';
import type { Logger } from '../util/log.js';
import { Status } from './process.js';
import type { TaskService } from './task-service.js';
import { withDeadline } from '../util/deadline.js';

/** How often the bundles are looked for: a stat per task. */
export const FORGOTTEN_TASK_CHECK_MS = 5_000;
/** How long a forgotten task may take to die of SIGKILL. */
const KILL_WAIT_MS = 30_000;

/** What the watch uses of the task service: the tasks' bundles and the Task API. */
export type ForgettableTasks = Pick<TaskService, 'taskBundles' | 'state' | 'kill' | 'wait' | 'delete'>;

export interface ForgottenTaskWatch {
  service: ForgettableTasks;
  logger: Logger;
  intervalMs?: number;
}

/** Starts the watch; the function returned stops it. */
export function watchForgottenTasks(o: ForgottenTaskWatch): () => void {
  const dropping = new Set<string>();
  const check = () => {
    for (const { id, bundle } of o.service.taskBundles()) {
      if (dropping.has(id) || fs.existsSync(bundle)) continue;
      dropping.add(id);
      o.logger.warn('containerd no longer knows this task (its bundle is gone): killing and deleting it', { id, bundle });
      endTask(o.service, id)
        .catch((err: Error) => o.logger.error('cannot end a task containerd no longer knows', { id, err: err.message }))
        .finally(() => dropping.delete(id));
    }
  };
  const timer = setInterval(check, o.intervalMs ?? FORGOTTEN_TASK_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** Ends a task as containerd's Delete of a running task would: SIGKILL, wait for its exit, delete. */
async function endTask(service: ForgettableTasks, id: string): Promise<void> {
  const state = await service.state({ id, execId: '' }).catch((err: unknown) => {
    if (err instanceof RpcError && err.code === Code.NotFound) return undefined; // deleted meanwhile
    throw err;
  });
  if (!state) return;
  if (state.status === Status.Running || state.status === Status.Paused) {
    await service.kill({ id, execId: '', signal: 9, all: true }).catch(() => undefined);
    await withDeadline(service.wait({ id, execId: '' }), KILL_WAIT_MS, () => new Error(`task ${id} still runs ${KILL_WAIT_MS / 1000} s after SIGKILL`));
  }
  await service.delete({ id, execId: '' });
}
