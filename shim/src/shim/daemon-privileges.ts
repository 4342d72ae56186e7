// The pod's shim daemon runs as root, as containerd's shims do, but without the capabilities that
// none of its work needs: `start` execs it through util-linux's setpriv with them dropped from the
// bounding set (and the inheritable set cleared), so the whole process (Node's own threads
// included, which the VMM's per-thread seccomp and capability drops do not cover) and everything
// it runs (iptables, nsenter, a daemon it migrates a pod to) can never hold them.
// Kept: SYS_ADMIN (mounts, network namespaces), NET_ADMIN/NET_RAW (tap, tc, iptables), the file
// capabilities the 9p server acts with for the guest's root (CHOWN, DAC_*, FOWNER, FSETID,
// MKNOD), KILL, SETUID/SETGID, SETPCAP (the VMM threads' own drops), SYS_PTRACE, SYS_NICE,
// SYS_RESOURCE, IPC_LOCK, NET_BIND_SERVICE.
import fs from 'node:fs';

/** The util-linux programs `start` execs the daemon through: unshare (its mount namespace), then setpriv. */
export const DAEMON_LAUNCH_TOOLS = ['unshare', 'setpriv'] as const;

/** Capability numbers (linux/capability.h) the daemon gives up, by setpriv's names. */
export const DAEMON_DROPPED_CAPABILITIES: Readonly<Record<string, number>> = {
  linux_immutable: 9,
  net_broadcast: 11,
  ipc_owner: 15,
  sys_module: 16,
  sys_rawio: 17,
  sys_chroot: 18,
  sys_pacct: 20,
  sys_boot: 22,
  sys_time: 25,
  sys_tty_config: 26,
  lease: 28,
  audit_write: 29,
  audit_control: 30,
  setfcap: 31,
  mac_override: 32,
  mac_admin: 33,
  syslog: 34,
  wake_alarm: 35,
  block_suspend: 36,
  audit_read: 37,
  perfmon: 38,
  bpf: 39,
  checkpoint_restore: 40,
};

/** The highest capability this kernel knows (older kernels lack the newest ones). */
function lastCapability(): number {
  try {
    return Number(fs.readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
  } catch {
    return 37; // Linux 5.4's: the oldest kernel assumed
  }
}

/** The command prefix that runs a program without DAEMON_DROPPED_CAPABILITIES. */
export function withoutDroppedCapabilities(lastCap = lastCapability()): string[] {
  const drop = Object.entries(DAEMON_DROPPED_CAPABILITIES)
    .filter(([, n]) => n <= lastCap)
    .map(([name]) => `-${name}`);
  return ['setpriv', '--bounding-set', drop.join(','), '--inh-caps=-all', '--'];
}
