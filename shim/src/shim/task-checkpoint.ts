// A task's Checkpoint (`ctr c checkpoint --task`): the task's whole pod VM, RAM included, saved
// into the directory containerd gives (it stores that directory as the checkpoint). Its processes
// keep their memory and run on from there after a Create with this checkpoint (task-service.ts
// create, task-migration.ts attachInitStdio). A pod of one container only: the VM holds every
// container of the pod.
import fs from 'node:fs';
import path from 'node:path';
import type { CheckpointTaskRequest } from '../containerd/task-api.js';
import { CHECKPOINT_VM_DIR, writeCheckpointInfo } from '../pod/checkpoint.js';
import type { Pod } from '../pod/types.js';
import { Code, RpcError, toRpcError } from '../rpc/errors.js';
import type { Logger } from '../util/log.js';
import { checkpointExitRequested } from './checkpoint-options.js';
import { Status, type Task } from './process.js';

export interface TaskCheckpoint {
  task: Task;
  /** How many containers the pod's VM runs. */
  containers: number;
  pod: () => Promise<Pod>;
  publish: (topic: string, type: string, event: Record<string, unknown>) => void;
  log: Logger;
}

export async function checkpointTask(req: CheckpointTaskRequest, { task, containers, pod: getPod, publish, log }: TaskCheckpoint): Promise<void> {
  if (task.init.status !== Status.Running) throw new RpcError(Code.FailedPrecondition, `cannot checkpoint task ${task.id}: it is not running`);
  if (containers > 1) {
    throw new RpcError(Code.FailedPrecondition, `cannot checkpoint task ${task.id}: its pod VM runs ${containers} containers, and a checkpoint saves the whole VM`);
  }
  if (!path.isAbsolute(req.path)) throw new RpcError(Code.InvalidArgument, `checkpoint of task ${task.id}: path ${JSON.stringify(req.path)} is not absolute`);
  const pod = await getPod();
  fs.mkdirSync(req.path, { recursive: true, mode: 0o700 });
  await pod.checkpoint(path.join(req.path, CHECKPOINT_VM_DIR)).catch((err) => {
    throw toRpcError(err, `checkpoint task ${task.id}`, Code.Internal);
  });
  writeCheckpointInfo(req.path, { containerId: task.id, paused: task.paused, terminal: task.init.stdio.terminal });
  publish('/tasks/checkpointed', 'TaskCheckpointed', { containerId: task.id, checkpoint: req.path });
  if (checkpointExitRequested(req.options)) {
    await pod.signalProcess(task.id, '', 9, true).catch((err) => {
      throw toRpcError(err, `stop task ${task.id} after its checkpoint`, Code.Internal);
    });
  }
  log.info('task checkpointed', { id: task.id, path: req.path });
}
