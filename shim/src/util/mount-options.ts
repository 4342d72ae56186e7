// containerd's mount options (a Mount's `options`, as in fstab) split into what mount(2) takes:
// flags, a propagation change made by a second call, and the filesystem's own data string. The
// table and the order of the calls follow containerd's own Linux mounter (mount/mount_linux.go),
// so a rootfs mounts here exactly as it would for runc.

/** The mount(2) flags by the names the VMM addon's mount() takes (vmm-native/src/host/mount.cc). */
export type MountFlag =
  | 'bind' | 'rec' | 'remount' | 'ro' | 'nosuid' | 'nodev' | 'noexec' | 'sync' | 'dirsync' | 'mand'
  | 'noatime' | 'nodiratime' | 'relatime' | 'strictatime'
  | 'private' | 'shared' | 'slave' | 'unbindable';

/** Options that set flags, and their negations ("rw" clears "ro"). */
const FLAG_OPTIONS: Record<string, { set?: MountFlag[]; clear?: MountFlag }> = {
  defaults: {},
  ro: { set: ['ro'] }, rw: { clear: 'ro' },
  bind: { set: ['bind'] }, rbind: { set: ['bind', 'rec'] },
  remount: { set: ['remount'] },
  nosuid: { set: ['nosuid'] }, suid: { clear: 'nosuid' },
  nodev: { set: ['nodev'] }, dev: { clear: 'nodev' },
  noexec: { set: ['noexec'] }, exec: { clear: 'noexec' },
  sync: { set: ['sync'] }, async: { clear: 'sync' },
  dirsync: { set: ['dirsync'] },
  mand: { set: ['mand'] }, nomand: { clear: 'mand' },
  noatime: { set: ['noatime'] }, atime: { clear: 'noatime' },
  nodiratime: { set: ['nodiratime'] }, diratime: { clear: 'nodiratime' },
  relatime: { set: ['relatime'] }, norelatime: { clear: 'relatime' },
  strictatime: { set: ['strictatime'] }, nostrictatime: { clear: 'strictatime' },
};

const PROPAGATION_OPTIONS: Record<string, MountFlag[]> = {
  private: ['private'], rprivate: ['private', 'rec'],
  shared: ['shared'], rshared: ['shared', 'rec'],
  slave: ['slave'], rslave: ['slave', 'rec'],
  unbindable: ['unbindable'], runbindable: ['unbindable', 'rec'],
};

/** Options mount(8) acts on itself, with nothing for mount(2) to do: a kernel would refuse them as data. */
const USERSPACE_ONLY = /^(x-.*|_netdev|nofail|auto|noauto|user|nouser|users|owner|group)$/;

export interface ParsedMountOptions {
  flags: MountFlag[];
  /** The propagation change (its own mount(2) call), if any: the last one given wins. */
  propagation: MountFlag[];
  /** Everything else, comma-joined, for the filesystem (e.g. overlay's lowerdir=...). */
  data: string;
}

export function parseMountOptions(options: string[]): ParsedMountOptions {
  const flags = new Set<MountFlag>();
  let propagation: MountFlag[] = [];
  const data: string[] = [];
  for (const option of options) {
    if (option === '') continue;
    if (option === 'loop') throw new Error('the "loop" mount option is not supported (a loop device would have to be set up on the host)');
    const known = FLAG_OPTIONS[option];
    if (known) {
      for (const f of known.set ?? []) flags.add(f);
      if (known.clear) flags.delete(known.clear);
    } else if (PROPAGATION_OPTIONS[option]) {
      propagation = PROPAGATION_OPTIONS[option];
    } else if (!USERSPACE_ONLY.test(option)) {
      data.push(option);
    }
  }
  return { flags: [...flags], propagation, data: data.join(',') };
}
