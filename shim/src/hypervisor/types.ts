// The hypervisor layer's contract (shim -> pod -> hypervisor -> agent). The pod layer talks to a
// VirtualMachine only through this interface, so the VMM behind it can change.
import type { Readable } from 'node:stream';

export interface VmSpec {
  /** Number of vCPUs (>= 1). */
  vcpus: number;
  /** Guest RAM in bytes, a multiple of 4096. */
  memoryBytes: number;
  /** vmlinux or bzImage. */
  kernel: string;
  initrd?: string;
  /** Full kernel command line (see defaultCmdline); virtio-mmio declarations are appended. */
  cmdline: string;
  /** Directory on tmpfs holding the RAM file (ignored for memfd). */
  memoryDir: string;
  memoryBacking: 'tmpfs' | 'memfd';
  /** A name for logs and the RAM file. */
  name: string;
  virtioRng: boolean;
  /** Block devices backed by host files; the guest sees /dev/vda, /dev/vdb, ... in this order. */
  disks?: DiskSpec[];
  /** Host directories shared over virtio-9p; in the guest: mount -t 9p -o trans=virtio,version=9p2000.L <tag> <dir>. */
  shares?: ShareSpec[];
  /**
   * virtio-vsock, hybrid (Firecracker-style) mode. The guest reaches host port P as the Unix socket
   * `<udsPath>_<P>`; host programs reach guest port P by connecting to `udsPath`, writing
   * `CONNECT <P>\n` and reading `OK <hostPort>\n`. guestCid: 3..4294967294.
   */
  vsock?: { guestCid: number; udsPath: string };
  /**
   * virtio-net (one interface, eth0 in the guest). `backendFd`: a tap (network/tap.ts) whose frames
   * the VM exchanges with the guest; the VM takes a duplicate, the caller closes its own. Without
   * one the NIC is on no wire (a template's: its clones get theirs). `mac`: default random.
   */
  net?: NetSpec;
}

export interface NetSpec {
  mac?: string;
  backendFd?: number;
}

export interface DiskSpec {
  path: string;
  readOnly: boolean;
  /** Up to 20 bytes, visible in the guest as /sys/block/vdX/serial. */
  serial?: string;
}

export interface ShareSpec {
  /** Mount tag: 1-64 characters of [A-Za-z0-9_.-], unique within the VM. */
  tag: string;
  /** Absolute path of an existing host directory. */
  hostPath: string;
  readOnly: boolean;
}

export type ExitReason =
  | 'reboot'
  | 'poweroff'
  | 'triple-fault'
  | 'internal-error'
  | 'fail-entry'
  | 'stopped'
  | 'vmm-error';

export interface VmExit {
  reason: ExitReason;
  detail: string;
}

export type VmState = 'created' | 'running' | 'pausing' | 'paused' | 'exited' | 'destroyed';

export interface VirtualMachine {
  readonly name: string;
  readonly state: VmState;
  /** Guest serial console output. */
  readonly console: Readable;
  /** RAM backing file on tmpfs ('' for memfd). */
  readonly memoryPath: string;
  readonly cmdline: string;
  start(): void;
  /** Resolves once every vCPU has left KVM_RUN and is parked. */
  pause(): Promise<void>;
  resume(): void;
  writeConsole(data: Buffer | string): void;
  /** Resolves when the guest ends (reboot, poweroff, crash) or the host stops it. */
  waitExit(): Promise<VmExit>;
  /** Stops the vCPUs and frees every resource (RAM file included). Idempotent. */
  destroy(): Promise<VmExit>;
}

/**
 * Obtains a VM for `spec`, not started yet: boot a fresh one (MicroVm's bootMicroVm) or, with
 * templates, restore one. The pod layer gets its VMs only through this.
 */
export type VmProvider = (spec: VmSpec) => VirtualMachine | Promise<VirtualMachine>;

/** The ending of a VM's RAM file in its memory directory (tmpfs backing). */
export const MEMORY_FILE_SUFFIX = '.ram';

/** The name of VM `vmName`'s RAM file in its memory directory: one name for who creates and who removes it. */
export function memoryFileName(vmName: string): string {
  return `${vmName}${MEMORY_FILE_SUFFIX}`;
}

/** "triple-fault (vCPU 0 triple-faulted ...)": the reason, with the VMM's detail when it gave one. */
export function describeExit(exit: { reason: string; detail: string }): string {
  return `${exit.reason}${exit.detail ? ` (${exit.detail})` : ''}`;
}
