// The containerd task service (containerd.task.v2.Task / v3), transport-neutral: the ttrpc and
// gRPC servers decode requests and call these handlers. Semantics follow the runc shim (see
// ../shared/reference/containerd-shim-protocol.md §3.3): Wait may arrive before Start, State reads
// STOPPED before Wait returns, Kill/Delete of a finished process answer NOT_FOUND, the init's
// TaskExit comes after its execs' exits and after all of its output reached the FIFOs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../util/log.js';
import type { Pod, PodRestore } from '../pod/types.js';
import { CHECKPOINT_VM_DIR } from '../pod/checkpoint.js';
import { readCheckpoint, readSpec } from './bundle.js';
import { checkpointTask } from './task-checkpoint.js';
import { Code, RpcError, toRpcError } from '../rpc/errors.js';
import { execsReported, type ExitInfo, Status, type Task, TaskProcess } from './process.js';
import { adoptTask, attachInitStdio, type MigratingTask, reattachStdio, tasksForMigration } from './task-migration.js';
import { mountRootfs, unmountAll } from './rootfs.js';
import { HostStdio, type StdioPaths, stdioMode } from './stdio.js';
import { validateId } from './errors.js';
import { cgroupsV2Metrics } from './metrics.js';
import { failpointsOf, hitFailpoint } from './failpoints.js';
import { decodeJsonAny } from '../containerd/protos.js';
import type {
  CheckpointTaskRequest,
  CloseIORequest,
  ConnectResponse,
  CreateTaskRequest,
  CreateTaskResponse,
  DeleteRequest,
  DeleteResponse,
  Empty,
  ExecProcessRequest,
  IdRequest,
  KillRequest,
  PidsResponse,
  ResizePtyRequest,
  ShutdownRequest,
  StartRequest,
  StartResponse,
  StateRequest,
  StateResponse,
  StatsResponse,
  TaskHandlerObject,
  UpdateTaskRequest,
  WaitRequest,
  WaitResponse,
} from '../containerd/task-api.js';

/** Where task events go (containerd's Events service in the daemon). */
export interface EventSink {
  publish(topic: string, eventType: string, event: Record<string, unknown>): void;
}

export interface TaskServiceOptions {
  namespace: string;
  /** Boots the pod's VM; called once, on the first Create. */
  /** Starts the pod's VM for its first container (whose OCI spec names the pod's network namespace, if any). */
  createPod: (first: { spec: Record<string, unknown>; restore?: PodRestore }) => Promise<Pod>;
  events: EventSink;
  logger: Logger;
  /** Honour io.stencil.failpoint.* annotations ([runtime] failpoints; tests only). */
  failpoints?: boolean;
  /** Called (once) after a Shutdown found no tasks left. */
  onShutdown: () => void;
  /** Told whenever the service becomes idle (no tasks) or busy again. */
  onIdle?: (idle: boolean) => void;
}

/** The Task RPCs, with requests as the transports decode them (every field present). */
export class TaskService implements TaskHandlerObject {
  private readonly tasks = new Map<string, Task>();
  /**
   * Creates in flight, by id (duplicates are refused before any work). A Delete of one cancels it:
   * containerd sends that when its Create call gave up (deadline, cancelled RunPodSandbox), and
   * would otherwise never hear of the task the Create still makes (a pod nobody knows: a leak).
   */
  private readonly creating = new Map<string, { cancelled: boolean; done: Promise<void> }>();
  /** A Shutdown came while only cancelled creates were left: exit once they have rolled back. */
  private shutdownAfterCancelledCreates = false;
  private pod?: Promise<Pod>;
  private shuttingDown = false;
  /** The tasks went to another daemon with the pod's VM: nothing more is reported or torn down here. */
  private migratedAway = false;
  private readonly log: Logger;

  constructor(private readonly options: TaskServiceOptions) {
    this.log = options.logger;
  }

  get taskCount(): number {
    return this.tasks.size + this.creating.size;
  }

  // ---- RPCs ----

  async create(req: CreateTaskRequest): Promise<CreateTaskResponse> {
    const id = validateId(req.id, 'id');
    if (this.tasks.has(id) || this.creating.has(id)) throw new RpcError(Code.AlreadyExists, `task ${id} already exists`);
    const checkpoint = req.checkpoint ? readCheckpoint(id, req.checkpoint) : undefined;
    const bundle = req.bundle;
    if (!path.isAbsolute(bundle)) throw new RpcError(Code.InvalidArgument, `task ${id}: bundle path ${JSON.stringify(bundle)} is not absolute`);
    let finished!: () => void;
    const pending = { cancelled: false, done: new Promise<void>((resolve) => (finished = resolve)) };
    this.creating.set(id, pending);
    this.options.onIdle?.(false);
    const undo: Array<() => Promise<unknown> | unknown> = [];
    const stopIfCancelled = () => {
      if (pending.cancelled) throw new RpcError(Code.Canceled, `task ${id}: create cancelled by a Delete of the task`);
    };
    try {
      const spec = readSpec(bundle);
      const failpoints = failpointsOf(id, spec.annotations, this.options.failpoints ?? false);
      const root = (spec.root ?? {}) as { path?: string };
      if (!root.path) throw new RpcError(Code.InvalidArgument, `task ${id}: config.json has no root.path`);
      const rootfsDir = path.resolve(bundle, root.path);
      const mounts = req.rootfs.map((m) => ({ type: m.type, source: m.source, target: m.target, options: m.options }));
      await mountRootfs(mounts, rootfsDir);
      if (mounts.length) undo.push(() => unmountAll(rootfsDir));
      if (!fs.existsSync(rootfsDir)) throw new RpcError(Code.InvalidArgument, `task ${id}: rootfs ${rootfsDir} does not exist`);
      const paths: StdioPaths = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
      const init = new TaskProcess(id, '', paths);
      init.io = await HostStdio.open(paths, { containerId: id, namespace: this.options.namespace }, this.log);
      undo.push(() => init.io?.close());
      const container = { id, spec, rootfs: rootfsDir, stdio: stdioMode(paths) };
      if (checkpoint && this.pod) throw new RpcError(Code.FailedPrecondition, `task ${id}: a checkpoint restores a whole pod, and this shim already runs one`);
      const restore = checkpoint && { vmDir: path.join(req.checkpoint, CHECKPOINT_VM_DIR), container, paused: checkpoint.paused };
      const pod = await this.getPod(spec, restore);
      stopIfCancelled();
      await hitFailpoint({ pod, points: failpoints, step: 'create.vm-ready', id, log: this.log });
      if (!restore) {
        await pod.createContainer(container).catch((err) => {
          throw toRpcError(err, `create task ${id}`, Code.Internal);
        });
      }
      undo.push(() => pod.deleteContainer(id));
      init.io.relay(
        await attachInitStdio(pod, id, stdioMode(paths), restore !== undefined, this.log).catch((err) => {
          throw toRpcError(err, `attach the stdio of task ${id}`, Code.Internal);
        }),
      );
      stopIfCancelled();
      init.pid = process.pid;
      const task: Task = {
        id,
        bundle,
        rootfsDir,
        mountedRootfs: mounts.length > 0,
        init,
        execs: new Map(),
        paused: false,
        oomKillsReported: 0,
        restored: restore !== undefined,
        failpoints,
      };
      this.tasks.set(id, task);
      // The init exists (waiting for Start) and can already be killed: watch it from now on.
      this.watchExit(task, init);
      await hitFailpoint({ pod, points: failpoints, step: 'create.container-made', id, log: this.log });
      this.publish('/tasks/create', 'TaskCreate', {
        containerId: id,
        bundle,
        rootfs: mounts,
        io: { stdin: paths.stdin, stdout: paths.stdout, stderr: paths.stderr, terminal: paths.terminal },
        checkpoint: req.checkpoint ?? '',
        pid: init.pid,
      });
      this.log.info(restore ? 'task restored from a checkpoint' : 'task created', { id, bundle, checkpoint: req.checkpoint || undefined });
      return { pid: init.pid };
    } catch (err) {
      this.log.warn('create failed', { id, err: String(err) });
      for (const step of undo.reverse()) await Promise.resolve().then(step).catch((e) => this.log.warn('cleanup after failed create', { id, err: String(e) }));
      throw err;
    } finally {
      this.creating.delete(id);
      finished();
      if (this.taskCount === 0) this.options.onIdle?.(true);
      if (this.shutdownAfterCancelledCreates && this.taskCount === 0) void this.shutdown({ id: '', now: false });
    }
  }

  async start(req: StartRequest): Promise<StartResponse> {
    const task = this.task(req.id);
    const proc = this.process(task, req.execId);
    if (proc.endedBeforeStart) {
      const why = proc.endedBeforeStart.why ? `: ${proc.endedBeforeStart.why}` : '';
      throw new RpcError(Code.FailedPrecondition, `cannot start ${proc.label}: it exited (${proc.exit!.exitStatus}) before it was started${why}`);
    }
    if (proc.starting || proc.status !== Status.Created) throw new RpcError(Code.FailedPrecondition, `${proc.label} was already started`);
    const starting = proc.execId ? this.startExec(task, proc) : this.startInit(task);
    proc.starting = starting;
    try {
      return await starting;
    } catch (err) {
      proc.starting = undefined;
      // The exec is over: its output FIFOs close, which a client waits for after a failed Start
      // (containerd 1.6's process.Start), and its Wait returns, as with runc's shim.
      if (proc.execId) {
        proc.markExited({ exitStatus: 255, exitedAt: new Date() });
        proc.io?.close();
      }
      throw err;
    }
  }

  private async startInit(task: Task): Promise<StartResponse> {
    const pod = await this.getPod();
    if (!task.restored) {
      await pod.startContainer(task.id).catch((err) => {
        throw toRpcError(err, `start task ${task.id}`, Code.Internal);
      });
      await hitFailpoint({ pod, points: task.failpoints, step: 'start.container-running', id: task.id, log: this.log });
    }
    if (task.init.status === Status.Created) task.init.status = Status.Running;
    this.publish('/tasks/start', 'TaskStart', { containerId: task.id, pid: task.init.pid });
    return { pid: task.init.pid };
  }

  private async startExec(task: Task, exec: TaskProcess): Promise<StartResponse> {
    if (task.init.status !== Status.Running) throw new RpcError(Code.FailedPrecondition, `cannot start ${exec.label}: the task is not running`);
    const pod = await this.getPod();
    const mode = stdioMode(exec.stdio);
    // A size that came before Start is the pty's from the first instruction on (OCI consoleSize);
    // one that comes while the exec starts is applied right after.
    const initial = exec.pendingSize; // only terminals get one (resizePty)
    const spec = initial ? { ...exec.spec, consoleSize: { height: initial.height, width: initial.width } } : (exec.spec ?? {});
    await pod.execProcess(task.id, exec.execId, spec, mode).catch((err) => {
      throw toRpcError(err, `start ${exec.label}`, Code.Internal);
    });
    exec.ptyReady = true;
    if (exec.pendingSize && exec.pendingSize !== initial)
      await pod.resizePty(task.id, exec.execId, exec.pendingSize).catch((err) => this.log.warn('resize during start', { exec: exec.label, err: String(err) }));
    exec.io!.relay(
      await pod.attachStdio(task.id, exec.execId, mode).catch((err) => {
        throw toRpcError(err, `attach the stdio of ${exec.label}`, Code.Internal);
      }),
    );
    exec.pid = process.pid;
    exec.status = Status.Running;
    this.publish('/tasks/exec-started', 'TaskExecStarted', { containerId: task.id, execId: exec.execId, pid: exec.pid });
    this.watchExit(task, exec);
    await hitFailpoint({ pod, points: task.failpoints, step: 'exec.process-started', id: task.id, execId: exec.execId, log: this.log });
    return { pid: exec.pid };
  }

  async state(req: StateRequest): Promise<StateResponse> {
    const task = this.task(req.id);
    const proc = this.process(task, req.execId);
    const status = proc === task.init && task.paused && proc.status === Status.Running ? Status.Paused : proc.status;
    return {
      id: task.id,
      bundle: task.bundle,
      pid: proc.pid,
      status,
      stdin: proc.stdio.stdin,
      stdout: proc.stdio.stdout,
      stderr: proc.stdio.stderr,
      terminal: proc.stdio.terminal,
      exitStatus: proc.exit?.exitStatus ?? 0,
      exitedAt: proc.exit?.exitedAt,
      execId: proc.execId,
    };
  }

  async delete(req: DeleteRequest): Promise<DeleteResponse> {
    const creating = !req.execId && !this.tasks.has(req.id) ? this.creating.get(req.id) : undefined;
    if (creating) {
      this.log.warn('delete of a task still being created: cancelling the create', { id: req.id });
      creating.cancelled = true;
      await creating.done;
      if (!this.tasks.has(req.id)) return { pid: 0, exitStatus: 128 + 9, exitedAt: new Date() };
    }
    const task = this.task(req.id);
    const execId = req.execId;
    const pod = await this.getPod();
    if (execId) {
      const exec = this.process(task, execId);
      if (exec.status === Status.Running) throw new RpcError(Code.FailedPrecondition, `cannot delete ${exec.label}: it is running`);
      task.execs.delete(execId);
      exec.io?.close();
      if (exec.status === Status.Stopped) await pod.deleteProcess(task.id, execId).catch((err) => this.log.warn('agent delete of exec', { err: String(err) }));
      const exit = exec.exit ?? { exitStatus: 0, exitedAt: new Date() };
      return { pid: exec.pid, exitStatus: exit.exitStatus, exitedAt: exit.exitedAt };
    }
    if (task.init.status === Status.Running) throw new RpcError(Code.FailedPrecondition, `cannot delete task ${task.id}: it is running`);
    this.tasks.delete(task.id);
    await pod.deleteContainer(task.id).catch((err) => this.log.warn('agent delete of container', { id: task.id, err: String(err) }));
    await hitFailpoint({ pod, points: task.failpoints, step: 'delete.container-gone', id: task.id, log: this.log });
    // A never-started init is gone with its container; report it as killed.
    task.init.markExited({ exitStatus: 128 + 9, exitedAt: new Date() });
    task.init.io?.close();
    for (const exec of task.execs.values()) exec.io?.close();
    if (task.mountedRootfs) await unmountAll(task.rootfsDir).catch((err) => this.log.error('cannot unmount rootfs', { dir: task.rootfsDir, err: String(err) }));
    const exit = task.init.exit!;
    this.publish('/tasks/delete', 'TaskDelete', { containerId: task.id, pid: task.init.pid, exitStatus: exit.exitStatus, exitedAt: exit.exitedAt, id: '' });
    this.log.info('task deleted', { id: task.id, exitStatus: exit.exitStatus });
    if (this.taskCount === 0) this.options.onIdle?.(true);
    return { pid: task.init.pid, exitStatus: exit.exitStatus, exitedAt: exit.exitedAt };
  }

  async pids(req: IdRequest): Promise<PidsResponse> {
    const task = this.task(req.id);
    // Container processes live in the guest; the host-visible process of the task is the shim,
    // which runs the VM (as Kata reports its hypervisor).
    return { processes: task.init.exit ? [] : [{ pid: task.init.pid }] };
  }

  async pause(req: IdRequest): Promise<Empty> {
    const task = this.task(req.id);
    if (task.init.status !== Status.Running) throw new RpcError(Code.FailedPrecondition, `cannot pause task ${task.id}: it is not running`);
    await (await this.getPod()).pauseContainer(task.id).catch((err) => {
      throw toRpcError(err, `pause task ${task.id}`, Code.Internal);
    });
    task.paused = true;
    this.publish('/tasks/paused', 'TaskPaused', { containerId: task.id });
    return {};
  }

  async resume(req: IdRequest): Promise<Empty> {
    const task = this.task(req.id);
    if (!task.paused) throw new RpcError(Code.FailedPrecondition, `cannot resume task ${task.id}: it is not paused`);
    await (await this.getPod()).resumeContainer(task.id).catch((err) => {
      throw toRpcError(err, `resume task ${task.id}`, Code.Internal);
    });
    task.paused = false;
    this.publish('/tasks/resumed', 'TaskResumed', { containerId: task.id });
    return {};
  }

  /** A checkpoint of the task's whole pod VM (task-checkpoint.ts). */
  async checkpoint(req: CheckpointTaskRequest): Promise<Empty> {
    await checkpointTask(req, {
      task: this.task(req.id),
      containers: this.tasks.size,
      pod: () => this.getPod(),
      publish: (topic, type, event) => this.publish(topic, type, event),
      log: this.log,
    });
    return {};
  }

  async kill(req: KillRequest): Promise<Empty> {
    const task = this.task(req.id);
    const proc = this.process(task, req.execId);
    if (proc.exit) throw new RpcError(Code.NotFound, `${proc.label}: process already finished`);
    if (proc.status === Status.Created && proc.execId) {
      // An exec that never started: it exits with the signal, as runc reports it.
      this.finishProcess(task, proc, { exitStatus: 128 + req.signal, exitedAt: new Date() });
      return {};
    }
    const signal = req.signal;
    if (!Number.isInteger(signal) || signal < 0 || signal > 64) throw new RpcError(Code.InvalidArgument, `kill ${proc.label}: invalid signal ${req.signal}`);
    await (await this.getPod()).signalProcess(task.id, proc.execId, signal, req.all).catch(async (err) => {
      // The pod ended meanwhile (a hung guest is ended by the very kill that found it hung): once
      // its end is handled (podEnded, a few microtasks on), the process is gone. A SIGKILL got
      // what it asked for; another signal finds it already finished, as runc's shim says.
      await new Promise((resolve) => setImmediate(resolve));
      if (proc.exit && signal === os.constants.signals.SIGKILL) return;
      if (proc.exit) throw new RpcError(Code.NotFound, `${proc.label}: process already finished (${(err as Error).message})`);
      throw toRpcError(err, `kill ${proc.label}`, Code.Internal);
    });
    return {};
  }

  async exec(req: ExecProcessRequest): Promise<Empty> {
    const task = this.task(req.id);
    const execId = validateId(req.execId, 'exec_id');
    if (task.execs.has(execId)) throw new RpcError(Code.AlreadyExists, `exec ${execId} already exists in task ${task.id}`);
    if (task.init.exit) throw new RpcError(Code.FailedPrecondition, `cannot exec in task ${task.id}: it has exited`);
    const spec = decodeJsonAny(req.spec, `exec ${execId}: process spec`);
    const paths: StdioPaths = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    const exec = new TaskProcess(task.id, execId, paths);
    exec.spec = spec;
    exec.io = await HostStdio.open(paths, { containerId: task.id, namespace: this.options.namespace }, this.log);
    task.execs.set(execId, exec);
    this.publish('/tasks/exec-added', 'TaskExecAdded', { containerId: task.id, execId });
    if (task.failpoints?.has('exec.added')) await hitFailpoint({ pod: await this.getPod(), points: task.failpoints, step: 'exec.added', id: task.id, execId, log: this.log });
    return {};
  }

  async resizePty(req: ResizePtyRequest): Promise<Empty> {
    const task = this.task(req.id);
    const proc = this.process(task, req.execId);
    if (!proc.stdio.terminal) throw new RpcError(Code.FailedPrecondition, `${proc.label} has no terminal`);
    if (proc.execId && !proc.ptyReady) {
      // The agent has no such exec before Start: keep the size for it (runc's shim drops it).
      proc.pendingSize = { width: req.width, height: req.height };
      return {};
    }
    await (await this.getPod()).resizePty(task.id, proc.execId, { width: req.width, height: req.height }).catch((err) => {
      throw toRpcError(err, `resize the terminal of ${proc.label}`, Code.Internal);
    });
    return {};
  }

  async closeIO(req: CloseIORequest): Promise<Empty> {
    const task = this.task(req.id);
    const proc = this.process(task, req.execId);
    if (req.stdin && proc.io) await proc.io.closeStdin();
    return {};
  }

  async update(req: UpdateTaskRequest): Promise<Empty> {
    const task = this.task(req.id);
    const resources = decodeJsonAny(req.resources, `update of task ${task.id}: resources`);
    if (task.init.exit) throw new RpcError(Code.NotFound, `update of task ${task.id}: it has exited`);
    await (await this.getPod()).updateContainer(task.id, resources).catch((err) => {
      throw toRpcError(err, `update resources of task ${task.id}`, Code.Internal);
    });
    return {};
  }

  async wait(req: WaitRequest): Promise<WaitResponse> {
    const task = this.task(req.id);
    const proc = this.process(task, req.execId);
    const exit = await proc.wait();
    return { exitStatus: exit.exitStatus, exitedAt: exit.exitedAt };
  }

  async stats(req: IdRequest): Promise<StatsResponse> {
    const task = this.task(req.id);
    if (task.init.exit) throw new RpcError(Code.NotFound, `task ${task.id} has exited: no stats`);
    const stats = await (await this.getPod()).stats(task.id).catch((err) => {
      throw toRpcError(err, `stats of task ${task.id}`, Code.Internal);
    });
    this.reportOom(task, stats.memory?.oomKillEvents ?? 0);
    return { stats: cgroupsV2Metrics(stats) };
  }

  async connect(req: IdRequest): Promise<ConnectResponse> {
    const task = this.tasks.get(req.id);
    return { shimPid: process.pid, taskPid: task?.init.pid ?? 0, version: '' };
  }

  async shutdown(req: ShutdownRequest): Promise<Empty> {
    if (this.taskCount > 0 && !req.now) {
      if (this.tasks.size === 0 && [...this.creating.values()].every((c) => c.cancelled)) this.shutdownAfterCancelledCreates = true;
      return {};
    }
    if (!this.shuttingDown) {
      this.shuttingDown = true;
      setImmediate(() => this.options.onShutdown());
    }
    return {};
  }

  /** Pod migration, source side: the tasks as they go (task-migration.ts), or why they cannot. */
  migratingTasks(): MigratingTask[] {
    return tasksForMigration(this.tasks.values(), this.creating.size);
  }

  /** The ids of the containers this shim serves. */
  containerIds(): string[] {
    return [...this.tasks.keys()];
  }

  /** Each task's bundle directory (forgotten-tasks.ts looks for them). */
  taskBundles(): { id: string; bundle: string }[] {
    return this.migratedAway ? [] : [...this.tasks.values()].map((t) => ({ id: t.id, bundle: t.bundle }));
  }

  /** The pod's VM if one runs (or boots), for a pod migration. */
  currentPod(): Promise<Pod> | undefined {
    return this.pod;
  }

  /**
   * Pod migration: every init's stdio let go of without loss (hold) before the VM moves, or
   * attached again (release) when it stays here after all.
   */
  async holdStdio(hold: boolean): Promise<void> {
    const pod = await this.getPod();
    for (const t of this.tasks.values()) await (hold ? t.init.io?.detachFromPod() : reattachStdio(pod, t, this.log));
  }

  /** The pod's VM is gone for good (a migration that failed after it moved): every process has exited. */
  podLost(why: string): void {
    this.podEnded(why);
  }

  get isMigratedAway(): boolean {
    return this.migratedAway;
  }

  /** The tasks run in another daemon now: their ends here (the VM's connections closing) are not exits. */
  releaseMigrated(): void {
    this.migratedAway = true;
    for (const task of this.tasks.values()) task.init.io?.close();
    this.tasks.clear();
  }

  /** Pod migration, destination side: the tasks of the pod whose VM arrived, as they run in it. */
  async adoptMigrated(pod: Pod, tasks: MigratingTask[]): Promise<void> {
    if (this.pod || this.tasks.size) throw new RpcError(Code.FailedPrecondition, 'this shim already runs a pod');
    this.pod = Promise.resolve(pod);
    void pod.ended.then((why) => this.podEnded(why));
    for (const migrating of tasks) {
      const task = await adoptTask(pod, migrating, this.options.namespace, this.log);
      this.tasks.set(task.id, task);
      this.watchExit(task, task.init);
    }
    this.options.onIdle?.(this.tasks.size === 0);
  }

  /** Stops the pod's VM (daemon exit). */
  async close(): Promise<void> {
    for (const task of this.tasks.values()) {
      task.init.io?.close();
      for (const e of task.execs.values()) e.io?.close();
      if (task.mountedRootfs) await unmountAll(task.rootfsDir).catch(() => undefined);
    }
    const pod = this.pod;
    this.pod = undefined;
    if (pod) await pod.then((p) => p.shutdown(), () => undefined);
  }

  // ---- internals ----

  private getPod(firstSpec: Record<string, unknown> = {}, restore?: PodRestore): Promise<Pod> {
    if (!this.pod) {
      const booting = this.options.createPod({ spec: firstSpec, restore });
      this.pod = booting;
      booting.then(
        (pod) => pod.ended.then((why) => this.podEnded(why)),
        () => {
          if (this.pod === booting) this.pod = undefined; // let a later Create try again
        },
      );
    }
    return this.pod.catch((err) => {
      // A refused setting (e.g. too many vCPUs) keeps its code; anything else may pass.
      throw toRpcError(err, 'cannot start the pod VM', Code.Unavailable);
    });
  }

  /** The VM is gone: every process still running has exited with 255 (as Kata reports it). */
  private podEnded(why: string): void {
    if (this.migratedAway) return;
    this.log.error('pod VM ended', { why });
    for (const task of this.tasks.values()) {
      for (const exec of task.execs.values()) if (!exec.exit && exec.status !== Status.Created) this.finishProcess(task, exec, { exitStatus: 255, exitedAt: new Date() });
      if (!task.init.exit) this.finishProcess(task, task.init, { exitStatus: 255, exitedAt: new Date() }, why);
    }
  }

  private watchExit(task: Task, proc: TaskProcess): void {
    void this.getPod()
      .then((pod) => pod.waitProcess(task.id, proc.execId))
      .then(
        async (exit) => {
          // TaskStart goes out before TaskExit even when the process exits at once.
          await proc.starting?.catch(() => undefined);
          await proc.io?.drained();
          if (!proc.execId) await execsReported(task);
          // Like the runc shim, TaskOOM precedes the TaskExit it caused (CRI's OOMKilled reason).
          if (exit.oomKilled) this.reportOom(task, Math.max(1, task.oomKillsReported));
          this.finishProcess(task, proc, { exitStatus: exit.exitStatus, exitedAt: exit.exitedAt });
        },
        (err) => {
          if (proc.exit || this.migratedAway) return;
          this.log.error('lost track of a process', { process: proc.label, err: String(err) });
          this.finishProcess(task, proc, { exitStatus: 255, exitedAt: new Date() });
        },
      );
  }

  /**
   * Publishes TaskOOM when the container's cgroup shows more OOM kills than announced so far. The
   * agent reports them at process exit and in stats (memory.events oom_kill).
   */
  private reportOom(task: Task, oomKills: number): void {
    if (oomKills <= task.oomKillsReported) return;
    task.oomKillsReported = oomKills;
    this.log.warn('container OOM kill', { container: task.id, oomKills });
    this.publish('/tasks/oom', 'TaskOOM', { containerId: task.id });
  }

  /** `why`: what ended it, when not the process itself (its pod's VM ended). */
  private finishProcess(task: Task, proc: TaskProcess, exit: ExitInfo, why?: string): void {
    if (proc.exit || this.migratedAway) return;
    proc.io?.close();
    if (proc === task.init) task.paused = false;
    if (proc.status === Status.Created && !proc.starting && !task.restored) proc.endedBeforeStart = { why }; // a restored init ran all along
    proc.markExited(exit);
    this.log.info('process exited', { process: proc.label, exitStatus: exit.exitStatus });
    this.publish('/tasks/exit', 'TaskExit', {
      containerId: task.id,
      id: proc.execId || task.id,
      pid: proc.pid,
      exitStatus: exit.exitStatus,
      exitedAt: exit.exitedAt,
    });
  }

  private task(id: string): Task {
    const task = this.tasks.get(id);
    if (!task) throw new RpcError(Code.NotFound, `task ${JSON.stringify(id)} not found`);
    return task;
  }

  private process(task: Task, execId: string): TaskProcess {
    if (!execId) return task.init;
    const exec = task.execs.get(execId);
    if (!exec) throw new RpcError(Code.NotFound, `exec ${JSON.stringify(execId)} not found in task ${task.id}`);
    return exec;
  }

  private publish(topic: string, type: string, event: Record<string, unknown>): void {
    this.options.events.publish(topic, type, event);
  }
}
