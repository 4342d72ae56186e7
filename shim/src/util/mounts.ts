// Host-side mounts of the pod layer. The guest gets a read-only *view* of a host directory over
// virtio-9p; container root filesystems are bind-mounted into that directory and show up in the
// view as read-write submounts (mount propagation), and are taken away when the container goes.
// So the guest can write inside a rootfs but cannot create, rename or replace anything in the
// structure around it (e.g. swap a directory for a symlink the host would then follow).
// Every mount and unmount is a mount(2)/umount2(2) call through the VMM addon, containerd's
// rootfs mounts included (their options split as containerd does it, mount-options.ts): a mount(8)
// process per step cost a fork and exec each, ~0.3 s per container in a slow host.
// /proc/self/mountinfo tells what is mounted where.
import fs from 'node:fs';
import path from 'node:path';
import { loadAddon } from '../hypervisor/native.js';
import { type MountFlag, parseMountOptions } from './mount-options.js';

/** Runs one of the addon's system calls; its error (naming the call and errno) becomes a MountError. */
function hostCall(call: () => void): void {
  try {
    call();
  } catch (err) {
    throw new MountError((err as Error).message, { cause: err });
  }
}

/** One mount(2) call; flags as mount(8) names them. */
const mountCall = (target: string, flags: MountFlag[], source = '', fstype = '', data = '') =>
  hostCall(() => loadAddon().mount({ source, target, fstype, flags, data }));

/** One umount2(2) call; `detach` unmounts lazily. */
const unmountCall = (target: string, flags: Array<'detach'> = []) => hostCall(() => loadAddon().unmount(target, flags));

export class MountError extends Error {
  override name = 'MountError';
}

/** A filesystem as containerd describes one (a CreateTaskRequest rootfs entry). */
export interface FilesystemMount {
  type: string;
  source: string;
  target: string;
  /** fstab-style options: flags (ro, nosuid, rbind, ...), propagation (rprivate, ...) and filesystem data. */
  options: string[];
}

/**
 * Mounts `m` as containerd's own Linux mounter does: one mount(2) with the flags and the data,
 * then the propagation change, then, for a read-only bind (which mount(2) makes writable), a
 * read-only remount. A failed later step takes the mount away again.
 */
export async function mountFilesystem(m: FilesystemMount): Promise<void> {
  let parsed: ReturnType<typeof parseMountOptions>;
  try {
    parsed = parseMountOptions(m.options);
  } catch (err) {
    throw new MountError(`mount ${m.type} ${m.source} on ${m.target}: ${(err as Error).message}`);
  }
  const { flags, propagation, data } = parsed;
  const bind = flags.includes('bind');
  mountCall(m.target, flags, m.source, bind ? '' : m.type, data);
  try {
    if (propagation.length) mountCall(m.target, propagation);
    if (bind && flags.includes('ro') && !flags.includes('remount')) mountCall(m.target, [...flags, 'remount']);
  } catch (err) {
    unmountCall(m.target, ['detach']);
    throw err;
  }
}

/**
 * Makes `source` (with every mount below it) visible at `target` as well, and keeps mount events
 * from propagating between the two copies: what is mounted later under `target` stays there.
 */
export async function bindMount(source: string, target: string): Promise<void> {
  mountCall(target, ['bind', 'rec'], source);
  try {
    mountCall(target, ['private', 'rec']);
  } catch (err) {
    await unmountTree(target).catch(() => undefined);
    throw err;
  }
}

/** Makes the bind mount at `target` read-only (the mounts below it keep their own flags). */
export async function remountReadOnly(target: string): Promise<void> {
  mountCall(target, ['remount', 'bind', 'ro']);
}

/** Cuts `target` (and the mounts below it) off from every propagation peer group. */
export async function makePrivate(target: string): Promise<void> {
  mountCall(target, ['private', 'rec']);
}

/**
 * Makes `view` a read-only view of the directory `dir`: `dir` becomes a mount point of its own
 * (propagation "shared"), `view` a read-only bind of it that receives (but never sends) mount
 * events, so whatever is mounted below `dir` later appears below `view` with its own flags.
 */
export async function createShareView(dir: string, view: string): Promise<void> {
  try {
    mountCall(dir, ['bind'], dir);
    mountCall(dir, ['private']);
    mountCall(dir, ['shared']);
    mountCall(view, ['bind'], dir);
    mountCall(view, ['slave']);
    mountCall(view, ['remount', 'bind', 'ro']);
  } catch (err) {
    for (const m of [view, dir]) if (mountsUnder(m).includes(m)) await unmountTree(m).catch(() => undefined);
    throw err;
  }
}

/** Unmounts just `target`, never lazily: a busy mount stays and the MountError says so. */
export async function unmount(target: string): Promise<void> {
  unmountCall(target);
}

/**
 * Unmounts `target` and everything below it. If something still uses it (EBUSY), detaches it
 * lazily: it disappears from the file tree at once and is freed when its last user goes.
 */
export async function unmountTree(target: string): Promise<void> {
  try {
    // Deepest first; a path with stacked mounts shows up again in the next round.
    for (let round = 0, mounts = mountsUnder(target); round < 8 && mounts.length; round++, mounts = mountsUnder(target)) {
      for (const m of mounts) unmountCall(m);
    }
  } catch {
    unmountCall(target, ['detach']);
  }
}

/** Decodes mountinfo's octal escapes (\040 for a space, \011, \012, \134). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points at or below `dir` (absolute, resolved), deepest first. */
export function mountsUnder(dir: string): string[] {
  const root = path.resolve(dir);
  const prefix = root.endsWith('/') ? root : `${root}/`;
  const found = new Set<string>();
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT ...
    const field = line.split(' ')[4];
    if (!field) continue;
    const mountPoint = unescapeMountPath(field);
    if (mountPoint === root || mountPoint.startsWith(prefix)) found.add(mountPoint);
  }
  return [...found].sort((a, b) => b.length - a.length);
}

export interface MountEntry {
  fstype: string;
  /** What was mounted, e.g. a device or the name given to a tmpfs. */
  source: string;
}

/** The mount whose mount point is exactly `dir` (the topmost, if several are stacked), if any. */
export function mountAt(dir: string): MountEntry | undefined {
  const target = path.resolve(dir);
  let found: MountEntry | undefined;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || fields[4] === undefined || unescapeMountPath(fields[4]) !== target) continue;
    found = { fstype: fields[dash + 1], source: unescapeMountPath(fields[dash + 2] ?? '') };
  }
  return found;
}

/**
 * Detaches every mount at or below `dir` (lazily, so a busy one goes too). Returns what could
 * not be unmounted, with the reason; an empty list means nothing is mounted there any more.
 */
export async function unmountAllUnder(dir: string): Promise<string[]> {
  const failures: string[] = [];
  for (let round = 0; round < 8; round++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) return [];
    failures.length = 0;
    for (const m of mounts) {
      try {
        unmountCall(m, ['detach']);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  }
  return mountsUnder(dir).length === 0 ? [] : failures.length ? failures : mountsUnder(dir);
}
