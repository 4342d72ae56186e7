// One process of a task (the init process or an exec) as the task service tracks it: status
// CREATED -> RUNNING -> STOPPED, the exit once known, and the waiters released by it.
import type { StdioPaths } from './stdio.js';
import type { HostStdio } from './stdio.js';
import type { Failpoints } from './failpoints.js';

export { TaskStatus as Status } from '../containerd/task-api.js';
import { TaskStatus as Status } from '../containerd/task-api.js';

export interface ExitInfo {
  exitStatus: number;
  exitedAt: Date;
}

export class TaskProcess {
  status = Status.Created;
  pid = 0;
  exit?: ExitInfo;
  /** Set when it exited while still CREATED (killed, or its pod's VM ended): it never ran, and Start says so, with why when known. */
  endedBeforeStart?: { why?: string };
  io?: HostStdio;
  /** Set while Start runs: the exit is reported only after the start (and its event). */
  starting?: Promise<unknown>;
  /** The JSON OCI process (execs only). */
  spec?: Record<string, unknown>;
  /** An exec's pty exists only once the agent started it (the init's from Create on). */
  ptyReady = false;
  /** The last ResizePty before that (the API allows one before Start; runc's shim drops it). */
  pendingSize?: { width: number; height: number };
  private readonly exited: Promise<ExitInfo>;
  private release!: (exit: ExitInfo) => void;

  constructor(
    readonly containerId: string,
    /** '' for the init process. */
    readonly execId: string,
    readonly stdio: StdioPaths,
  ) {
    this.exited = new Promise((resolve) => (this.release = resolve));
  }

  get label(): string {
    return this.execId ? `exec ${this.execId} of ${this.containerId}` : `init of ${this.containerId}`;
  }

  /** Records the exit: State reads STOPPED before any waiter is released. Idempotent. */
  markExited(exit: ExitInfo): void {
    if (this.exit) return;
    this.exit = exit;
    this.status = Status.Stopped;
    this.release(exit);
  }

  /** Resolves with the exit (at once for a process that has already exited). */
  wait(): Promise<ExitInfo> {
    return this.exited;
  }
}

/** A container as the task service tracks it: its init, its execs, where its files are. */
export interface Task {
  id: string;
  bundle: string;
  rootfsDir: string;
  /** Whether the shim mounted rootfsDir (and must unmount it). */
  mountedRootfs: boolean;
  init: TaskProcess;
  execs: Map<string, TaskProcess>;
  paused: boolean;
  /** OOM kills in the container's cgroup already announced with TaskOOM. */
  oomKillsReported: number;
  /** Taken up again from a checkpoint: its init runs from Create on, Start only reports it. */
  restored: boolean;
  /** Faults to inject at its steps (failpoints.ts); absent for a task that came with a migration. */
  failpoints?: Failpoints;
}

/** How long an exited init waits for its execs' exits to be reported first. */
const EXEC_EXIT_GRACE_MS = 5_000;

/** Waits (bounded) until every started exec of the task has had its exit reported. */
export async function execsReported(task: Task): Promise<void> {
  const running = [...task.execs.values()].filter((e) => e.status === Status.Running).map((e) => e.wait());
  if (running.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(running), new Promise((r) => (timer = setTimeout(r, EXEC_EXIT_GRACE_MS)))]);
  clearTimeout(timer);
}
