// `containerd-shim-stencil-v2 ... -bundle B delete`: runs after every teardown of a task and when
// its daemon died. It must be quick, idempotent and limited to this task: if the pod's daemon is
// alive, it already cleaned up (and may serve other containers); if it is gone, so is the VM it
// ran, and what it left behind (rootfs mount, shared-dir mounts, state dir, RAM file, socket) is
// removed here. stdout carries a raw DeleteResponse, written with protobufjs' low-level Writer
// (no .proto parsing: this runs under containerd's 5 s cleanup timeout).
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, defaultConfig, type StencilConfig } from '../../../runtime-config/src/config.js';
import { groupId, isListening, podKey, podStateDir, podVmName, removeDaemonSocket, socketPath } from './address.js';
import type { ShimFlags } from './flags.js';
import { isMountPoint, unmountAll } from './rootfs.js';
import { mountsUnder } from '../util/mounts.js';
import { removeStateDir } from '../pod/pod-vm-options.js';
import { minimalProtobuf } from '../util/protobuf-minimal.js';
import { MEMORY_FILE_SUFFIX } from '../hypervisor/types.js';

export interface DeleteResult {
  pid: number;
  exitStatus: number;
  exitedAt: Date;
  removed: string[];
}

export async function deleteTask(flags: ShimFlags, bundle: string): Promise<DeleteResult> {
  const result: DeleteResult = { pid: 0, exitStatus: 128 + 9, exitedAt: new Date(), removed: [] };
  const group = groupId(bundle, flags.id);
  const sock = socketPath(flags.address, flags.namespace, group);
  if (await isListening(sock, 1_000)) return result;

  const rootfs = path.join(bundle, 'rootfs');
  if (isMountPoint(rootfs)) {
    await unmountAll(rootfs);
    result.removed.push(`mount ${rootfs}`);
  }
  const config = configOrDefaults(flags.config);
  const key = podKey(flags.address, flags.namespace, group);
  // The pod's own, and those of daemons it migrated to (named <name>-m<pid>, pod-migration.ts).
  for (const stateDir of withMigrated(podStateDir(config.runtime.stateDir, key), '')) {
    for (const mount of mountsUnder(stateDir)) result.removed.push(`mount ${mount}`);
    if ((await removeStateDir(stateDir)).length === 0) result.removed.push(stateDir);
  }
  for (const ram of withMigrated(path.join(config.hypervisor.memoryDir, podVmName(key)), MEMORY_FILE_SUFFIX)) {
    fs.rmSync(ram, { force: true });
    result.removed.push(ram);
  }
  result.removed.push(...removeDaemonSocket(sock));
  return result;
}

/** `base + suffix` and `base-m<pid> + suffix`, those that exist. */
function withMigrated(base: string, suffix: string): string[] {
  const dir = path.dirname(base);
  const name = path.basename(base);
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const migrated = (e: string) =>
    e.startsWith(`${name}-m`) && e.endsWith(suffix) && /^\d+$/.test(e.slice(name.length + 2, e.length - suffix.length));
  return entries.filter((e) => e === name + suffix || migrated(e)).map((e) => path.join(dir, e));
}

function configOrDefaults(file: string): StencilConfig {
  try {
    return loadConfig({ path: file }).config;
  } catch {
    return defaultConfig(); // cleanup must not fail because of a broken config file
  }
}

/**
 * The raw containerd.task.v2.DeleteResponse the `delete` subcommand prints:
 * pid = 1, exit_status = 2, exited_at = 3 (google.protobuf.Timestamp: seconds = 1, nanos = 2).
 */
export function encodeDeleteResponse(r: { pid: number; exitStatus: number; exitedAt: Date }): Uint8Array {
  const ms = r.exitedAt.getTime();
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  const w = minimalProtobuf().Writer.create();
  if (r.pid) w.uint32((1 << 3) | 0).uint32(r.pid);
  if (r.exitStatus) w.uint32((2 << 3) | 0).uint32(r.exitStatus);
  w.uint32((3 << 3) | 2).fork();
  if (seconds) w.uint32((1 << 3) | 0).int64(seconds);
  if (nanos) w.uint32((2 << 3) | 0).int32(nanos);
  w.ldelim();
  return w.finish();
}
