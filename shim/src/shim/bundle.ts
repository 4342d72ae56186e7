// What the shim reads from the bundle containerd prepares for a task: the OCI spec
// (config.json) and, for a restore, the checkpoint directory a Create names.
import fs from 'node:fs';
import path from 'node:path';
import { type CheckpointInfo, readCheckpointInfo } from '../pod/checkpoint.js';
import { Code, RpcError } from '../rpc/errors.js';

/** The bundle's config.json as a JSON object; InvalidArgument naming the file otherwise. */
export function readSpec(bundle: string): Record<string, unknown> {
  const file = path.join(bundle, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new RpcError(Code.InvalidArgument, `cannot read the OCI spec ${file}: ${(err as Error).message}`);
  }
  try {
    const spec = JSON.parse(text) as unknown;
    if (!spec || typeof spec !== 'object' || Array.isArray(spec)) throw new Error('not a JSON object');
    return spec as Record<string, unknown>;
  } catch (err) {
    throw new RpcError(Code.InvalidArgument, `invalid OCI spec ${file}: ${(err as Error).message}`);
  }
}

/** The checkpoint a Create of task `id` restores; InvalidArgument when it is unreadable or another container's. */
export function readCheckpoint(id: string, dir: string): CheckpointInfo {
  let info: CheckpointInfo;
  try {
    info = readCheckpointInfo(dir);
  } catch (err) {
    throw new RpcError(Code.InvalidArgument, `task ${id}: ${(err as Error).message}`);
  }
  if (info.containerId !== id) {
    throw new RpcError(Code.InvalidArgument, `task ${id}: checkpoint ${dir} holds container ${info.containerId}: restore it under that id (the guest knows it by it)`);
  }
  return info;
}
