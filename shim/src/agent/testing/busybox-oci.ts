// Test support for the agent: a busybox root filesystem and a minimal OCI spec, used by the
// host-side agent tests and the VM tests. Not used by the shim itself.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const BUSYBOX_STATIC = '/bin/busybox';

/** Whether BUSYBOX_STATIC is the statically linked busybox (Debian's busybox-static). */
export function haveStaticBusybox(): boolean {
  try {
    const head = fs.readFileSync(BUSYBOX_STATIC).subarray(0, 4096);
    // A dynamic executable names its interpreter (PT_INTERP) near the start.
    return head.subarray(0, 4).toString('latin1') === '\x7fELF' && !head.includes('ld-linux');
  } catch {
    return false;
  }
}

/**
 * Makes `dir` a root filesystem: busybox-static plus one symlink per applet, at the paths
 * `busybox --list-full` names, each pointing at /bin/busybox inside the rootfs (what
 * `busybox --install -s` does when run chrooted, without needing chroot).
 */
export function makeBusyboxRootfs(dir: string): string {
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root', 'run']) {
    fs.mkdirSync(path.join(dir, d), { recursive: true });
  }
  fs.chmodSync(path.join(dir, 'tmp'), 0o1777);
  fs.copyFileSync(BUSYBOX_STATIC, path.join(dir, 'bin/busybox'));
  fs.chmodSync(path.join(dir, 'bin/busybox'), 0o755);
  const applets = execFileSync(BUSYBOX_STATIC, ['--list-full'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const applet of applets) {
    const link = path.join(dir, applet);
    if (applet === 'bin/busybox' || fs.existsSync(link)) continue;
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync('/bin/busybox', link);
  }
  fs.writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(dir, 'etc/group'), 'root:x:0:\n');
  return dir;
}

export interface OciProcessOptions {
  args: string[];
  terminal?: boolean;
  env?: string[];
  cwd?: string;
}

/** An OCI `process` object running as root with the default capabilities of a container. */
export function ociProcess(opts: OciProcessOptions): Record<string, unknown> {
  const caps = [
    'CAP_CHOWN',
    'CAP_DAC_OVERRIDE',
    'CAP_FOWNER',
    'CAP_FSETID',
    'CAP_KILL',
    'CAP_SETGID',
    'CAP_SETUID',
    'CAP_SETPCAP',
    'CAP_NET_BIND_SERVICE',
    'CAP_SYS_CHROOT',
  ];
  return {
    terminal: opts.terminal ?? false,
    user: { uid: 0, gid: 0 },
    args: opts.args,
    env: opts.env ?? ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'TERM=xterm'],
    cwd: opts.cwd ?? '/',
    capabilities: { bounding: caps, effective: caps, permitted: caps },
    noNewPrivileges: true,
  };
}

/** A minimal OCI runtime spec (config.json) for `rootfs` (an absolute path). */
export function ociSpec(rootfs: string, proc: OciProcessOptions, hostname = 'stencil-test'): Record<string, unknown> {
  return {
    ociVersion: '1.0.2',
    process: ociProcess(proc),
    root: { path: rootfs, readonly: false },
    hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
      },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      // Allow every device: crun then installs no eBPF device filter (which needs a raised
      // RLIMIT_MEMLOCK some hosts refuse).
      resources: { devices: [{ allow: true, access: 'rwm' }] },
    },
  };
}
