// The template directory's own tmpfs: mounted (with its size) the first time it is needed and
// reused after that; never mounted twice on the same directory.
import fs from 'node:fs';
import { mountFilesystem, mountsUnder } from '../util/mounts.js';

const TMPFS_MAGIC = 0x01021994;
/** The source name of the tmpfs Stencil mounts (mountinfo shows it): `pool destroy` unmounts only that. */
export const TEMPLATE_TMPFS_SOURCE = 'stencil-templates';

/** Whether `dir` is on a tmpfs already (its own mount or a parent's, e.g. /dev/shm). */
export function onTmpfs(dir: string): boolean {
  return fs.statfsSync(dir).type === TMPFS_MAGIC;
}

/**
 * Makes `dir` a tmpfs of `sizeBytes` (mode 0700) unless it already is its own mount point. A mount
 * point that is not a tmpfs is refused: template RAM must be shareable page cache, not a disk.
 */
export async function ensureTmpfs(dir: string, sizeBytes: number): Promise<void> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const real = fs.realpathSync(dir);
  if (mountsUnder(real).includes(real)) {
    if (!onTmpfs(real)) throw new Error(`template directory ${real} is a mount point but not a tmpfs`);
    return;
  }
  await mountFilesystem({ type: 'tmpfs', source: TEMPLATE_TMPFS_SOURCE, target: real, options: [`size=${sizeBytes}`, 'mode=0700', 'nodev', 'nosuid', 'noexec'] });
}
