// Mounting what containerd passes in CreateTaskRequest.rootfs onto <bundle>/rootfs, and undoing
// it. containerd only rmdir()s rootfs afterwards, and removing the snapshot fails while it is
// still mounted, so unmounting on Delete (and in the `delete` subcommand) matters.
import fs from 'node:fs';
import path from 'node:path';
import { Code, RpcError } from '../rpc/errors.js';
import { mountFilesystem, mountsUnder, unmountAllUnder } from '../util/mounts.js';

export interface MountSpec {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

const TYPE_RE = /^[a-z0-9._-]{1,32}$/;

/** Mounts each entry in order onto `target` (later ones stack on earlier ones, as runc does). */
export async function mountRootfs(mounts: MountSpec[], target: string): Promise<void> {
  if (mounts.length === 0) return;
  fs.mkdirSync(target, { recursive: true });
  let mounted = 0;
  try {
    for (const m of mounts) {
      if (!TYPE_RE.test(m.type)) throw new RpcError(Code.InvalidArgument, `rootfs mount: invalid type ${JSON.stringify(m.type)}`);
      if (m.options.some((o) => o.includes(',') && m.type !== 'overlay')) {
        throw new RpcError(Code.InvalidArgument, `rootfs mount: option contains a comma: ${JSON.stringify(m.options)}`);
      }
      const dest = m.target ? path.join(target, m.target) : target;
      const inside = path.relative(target, dest);
      if (inside === '..' || inside.startsWith(`..${path.sep}`)) throw new RpcError(Code.InvalidArgument, `rootfs mount: target ${JSON.stringify(m.target)} leaves the rootfs`);
      // A mount of type "bind" is a bind whether or not its options say so.
      const options = m.type === 'bind' && !m.options.some((o) => o === 'bind' || o === 'rbind') ? ['bind', ...m.options] : m.options;
      try {
        await mountFilesystem({ type: m.type, source: m.source || 'none', target: dest, options });
      } catch (err) {
        throw new RpcError(Code.Internal, `cannot mount ${m.type} ${m.source} on ${dest}: ${(err as Error).message}`);
      }
      mounted++;
    }
  } catch (err) {
    if (mounted > 0) await unmountAll(target).catch(() => undefined);
    throw err;
  }
}

/** Unmounts everything mounted at or below `target` (lazily if busy). */
export async function unmountAll(target: string): Promise<void> {
  const failures = await unmountAllUnder(target);
  if (failures.length) throw new Error(`cannot unmount ${target}: ${failures.join('; ')}`);
}

export function isMountPoint(dir: string): boolean {
  return mountsUnder(dir).includes(path.resolve(dir));
}
