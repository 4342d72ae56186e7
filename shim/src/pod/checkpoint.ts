// A pod checkpoint as containerd stores it (the directory a Checkpoint fills and a Create with
// `checkpoint` gets back, unpacked): the whole VM saved with its RAM (vm/: state, config and a
// sparse memory file, vmm-native/src/snapshot) and what the shim needs to take the container
// up again inside it.
import fs from 'node:fs';
import path from 'node:path';

export const CHECKPOINT_VM_DIR = 'vm';
export const CHECKPOINT_INFO_FILE = 'stencil-checkpoint.json';
const FORMAT = 'stencil-pod-checkpoint';
const VERSION = 1;

export interface CheckpointInfo {
  /** The container inside the VM (the agent knows it by this id). */
  containerId: string;
  /** Its processes were frozen (containerd pauses a task while it checkpoints it). */
  paused: boolean;
  /** Guest stdio mode of its init process, which the restore attaches again. */
  terminal: boolean;
}

export class CheckpointError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CheckpointError';
  }
}

export function writeCheckpointInfo(dir: string, info: CheckpointInfo): void {
  const body = JSON.stringify({ format: FORMAT, version: VERSION, ...info }, null, 2) + '\n';
  fs.writeFileSync(path.join(dir, CHECKPOINT_INFO_FILE), body, { mode: 0o600 });
}

/** Reads and checks a checkpoint directory; errors name the file and what is wrong. */
export function readCheckpointInfo(dir: string): CheckpointInfo {
  const file = path.join(dir, CHECKPOINT_INFO_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CheckpointError(`checkpoint ${dir} is not a Stencil pod checkpoint: ${file}: ${(err as Error).message}`, { cause: err });
  }
  const o = raw as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || o.format !== FORMAT) throw new CheckpointError(`${file}: not a Stencil pod checkpoint (format ${JSON.stringify(o?.format)})`);
  if (o.version !== VERSION) throw new CheckpointError(`${file}: version ${JSON.stringify(o.version)} is not supported (this Stencil reads ${VERSION})`);
  if (typeof o.containerId !== 'string' || !o.containerId) throw new CheckpointError(`${file}: containerId must be a non-empty string`);
  if (typeof o.paused !== 'boolean' || typeof o.terminal !== 'boolean') throw new CheckpointError(`${file}: paused and terminal must be booleans`);
  if (!fs.existsSync(path.join(dir, CHECKPOINT_VM_DIR, 'state'))) throw new CheckpointError(`checkpoint ${dir} has no VM snapshot (${CHECKPOINT_VM_DIR}/state)`);
  return { containerId: o.containerId, paused: o.paused, terminal: o.terminal };
}
