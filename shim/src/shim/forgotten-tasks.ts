// Tasks containerd has given up on while their daemon still runs them. A restarted containerd gives
// each shim a few seconds to answer (io.containerd.timeout.shim.load, 5 s by default); a daemon that
// was only slow (a loaded host) is then taken for dead: containerd runs the shim's `delete`, reports
// the task exited and removes its bundle. Nobody could see or stop the container after that, and
// its VM would run on. So the daemon looks for its tasks' bundles now and then, and ends a task
// whose bundle has gone as a Delete from containerd would have (runc's `delete --force` kills the
// container in that case too); with no task left the daemon's idle exit takes the VM away.
import fs from 'node:fs';
import type { Logger } from '../util/log.js';

/** How often the bundles are looked for: a stat per task. */
export const FORGOTTEN_TASK_CHECK_MS = 5_000;

export interface ForgottenTaskWatch {
  /** The daemon's tasks and their bundle directories now. */
  tasks(): { id: string; bundle: string }[];
  /** Ends a task containerd no longer knows (kill, then delete). */
  drop(id: string): Promise<void>;
  logger: Logger;
  intervalMs?: number;
}

/** Starts the watch; the function returned stops it. */
export function watchForgottenTasks(o: ForgottenTaskWatch): () => void {
  const dropping = new Set<string>();
  const check = () => {
    for (const { id, bundle } of o.tasks()) {
      if (dropping.has(id) || fs.existsSync(bundle)) continue;
      dropping.add(id);
      o.logger.warn('containerd no longer knows this task (its bundle is gone): killing and deleting it', { id, bundle });
      o.drop(id)
        .catch((err: Error) => o.logger.error('cannot end a task containerd no longer knows', { id, err: err.message }))
        .finally(() => dropping.delete(id));
    }
  };
  const timer = setInterval(check, o.intervalMs ?? FORGOTTEN_TASK_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
