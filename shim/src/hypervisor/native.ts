// Loads the C++ KVM addon (vmm-native) built by node-gyp.
import { createRequire } from 'node:module';
import path from 'node:path';
import { repoRoot } from '../util/paths.js';

export interface NativeVmConfig {
  vcpus: number;
  memoryBytes: number;
  memoryBacking: 'tmpfs' | 'memfd';
  memoryDir: string;
  memoryFileName: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  virtioRng: boolean;
  disks: Array<{ path: string; readOnly: boolean; serial: string }>;
  shares: Array<{ tag: string; hostPath: string; readOnly: boolean }>;
  vsock?: { guestCid: number; udsPath: string };
  /** virtio-net: `mac` (default random), `backendFd` a tap (the VM duplicates it); none: no wire. */
  net?: { mac?: string; backendFd?: number };
  /** Leave the RAM file (memoryDir/memoryFileName) behind when the VM ends (QEMU's mem-path file). */
  keepMemoryFile?: boolean;
}

/** A paused VM's state and configuration without its RAM (NativeVm.saveState). */
export interface SavedVmState {
  /** The VMM's binary state file (vmm-native/src/snapshot/state_file.h). */
  state: Buffer;
  /** The configuration JSON a snapshot directory holds as `config`. */
  config: string;
}

/**
 * Restores a VM from a snapshot directory (state + config + memory, see vmm-native/src/snapshot):
 * the configuration comes from the snapshot; a clone may change its vsock CID/socket and the host
 * paths of its shares. `vcpus`/`memoryBytes`, when given, must match the snapshot's.
 */
export interface NativeRestoreConfig {
  /** A snapshot directory; or, instead, restoreState (then memoryPath is required). */
  restoreFrom?: string;
  restoreState?: SavedVmState;
  /** Or the VM an incoming live migration brings (after its 'accepted'; its options apply). */
  incoming?: NativeMigrationIncoming;
  /** RAM from this file instead of the snapshot's memory: mapped copy-on-write, or shared. */
  memoryPath?: string;
  /** Map memoryPath MAP_SHARED (the clone's writes land in the file); default copy-on-write. */
  memoryShared?: boolean;
  /** Created ahead (KVM VM, irqchip, vCPUs, RAM slot: the slow part); consumed, even if the restore fails. */
  shell?: NativeVmShell;
  vsock?: { guestCid?: number; udsPath?: string };
  shares?: Array<{ tag: string; hostPath: string }>;
  /** The clone's virtio-net backend (a tap) and MAC; the snapshot must have a virtio-net device. */
  net?: { mac?: string; backendFd?: number };
  vcpus?: number;
  memoryBytes?: number;
}

/** Opaque: `new NativeVmShell(vcpus, memoryBytes)`, for one restore with matching vCPUs and memory. */
export interface NativeVmShell {
  readonly __brand?: 'NativeVmShell';
}

export type NativeEvent = 'console' | 'paused' | 'exited' | 'migration';

/** A live migration's tuning (vmm-native/src/migration/source.h); unset fields keep the defaults. */
export interface NativeMigrationParameters {
  /** The pause the final round may cost (default 50 ms). */
  downtimeLimitMs?: number;
  /** Bytes per second the stream may use; 0 (default): unlimited. */
  maxBandwidth?: number;
  /** Dirty-page rounds before throttling (or failing); default 30. */
  maxRounds?: number;
  /** Slow the guest down when rounds run out (QEMU's auto-converge); else fail. Default on. */
  throttle?: boolean;
  throttleInitial?: number;
  throttleIncrement?: number;
}

export type NativeMigrationStatus = 'none' | 'setup' | 'active' | 'completed' | 'failed' | 'cancelled';

export interface NativeMigrationStats {
  status: NativeMigrationStatus;
  error: string;
  ramTotal: number;
  transferred: number;
  /** Dirty bytes at the last count. */
  remaining: number;
  pagesSent: number;
  zeroPages: number;
  /** Dirty-page rounds after the first pass. */
  rounds: number;
  /** Bytes per second the guest dirtied in the last round. */
  dirtyRate: number;
  /** Bytes per second the link carried in the last round. */
  bandwidth: number;
  expectedDowntimeMs: number;
  /** From the pause to the destination running (-1 until completed). */
  downtimeMs: number;
  setupTimeMs: number;
  totalTimeMs: number;
  throttlePercent: number;
  /** The destination had the clone's template: pages the clone never wrote stayed home. */
  templateShared: boolean;
  /** Where the downtime went, once completed (vmm-native/src/migration/source.h). */
  downtimePhasesMs?: DowntimePhasesMs;
}

/** Milliseconds of a migration's downtime: parking the vCPUs, the last dirty pages, the VM's state, the destination starting it. */
export interface DowntimePhasesMs {
  pause: number;
  finalRam: number;
  saveState: number;
  destination: number;
}

export type NativeIncomingEvent = 'accepted' | 'received' | 'finished';

export interface NativeIncomingStats {
  status: NativeMigrationStatus;
  error: string;
  peer: string;
  received: number;
  pages: number;
  zeroPages: number;
  templateShared: boolean;
  /** The stream is complete and verified: a NativeVm may be built from it ({incoming}). */
  stateReady: boolean;
  /** The source VM was running (not paused) when it stopped: the destination runs it on. */
  sourceRunning: boolean;
}

/** The listening end of a live migration (vmm-native/src/migration/destination.h). */
export interface NativeMigrationIncoming {
  start(): void;
  cancel(): void;
  /** The VM built from this stream runs: tells the source, which then lets its VM go. */
  complete(): void;
  /** The VM could not be built or started: tells the source, which resumes its VM. */
  fail(reason: string): void;
  stats(): NativeIncomingStats;
  /** The bound TCP port (useful with port 0). */
  port(): number;
  /** Stops listening and drops whatever was received and not taken. */
  close(): void;
}

export interface NativeIncomingOptions {
  /** Where new guest RAM is created, and its file name (removed with the VM). */
  memoryDir: string;
  memoryName: string;
  /** Start from the source clone's template when this host has the same one (default true). */
  useTemplate?: boolean;
  /** What the stream's VM must match (vcpus, memoryBytes) and this host's wiring for it. */
  restore?: Pick<NativeRestoreConfig, 'vcpus' | 'memoryBytes' | 'vsock' | 'shares' | 'net'>;
}

export interface NativeVm {
  /** paused: the vCPUs park before their first instruction ('paused' fires); resume() runs them. */
  start(options?: { paused?: boolean }): void;
  pause(): void;
  resume(): void;
  stop(): void;
  /** An NMI on every vCPU, each before its next guest entry (a paused VM's on resume). */
  injectNmi(): void;
  destroy(): void;
  sendConsoleInput(data: Buffer): void;
  /**
   * An arriving VM (built from an incoming migration): with autostart, starts running as its
   * state is received, before its 'received' event reaches JavaScript, if the source was
   * running; the source is then told at once. Without autostart nothing starts by itself.
   */
  startOnArrival(autostart: boolean): void;
  /** Whether a start on arrival happened, or why it failed ('' if it did not). */
  arrival(): { started: boolean; error: string };
  /**
   * Template mode: for a paused VM with tmpfs-file RAM, writes dir/state and dir/config and makes
   * the RAM file dir/memory (a hard link, no copy). The VM can then only be destroyed.
   * copyMemory: copies RAM (sparsely) into dir/memory instead; `dir` must not exist or be empty
   * and is written whole or not at all; the VM stays paused and may resume.
   */
  saveSnapshot(dir: string, options?: { copyMemory?: boolean }): void;
  /** A paused VM's state and config without RAM; the VM stays paused and may resume. */
  saveState(): SavedVmState;
  info(): { cmdline: string; memoryPath: string; memoryBytes: number };
  /** A live migration to tcp:HOST:PORT or unix:PATH in the background ('migration' events). */
  migrate(uri: string, parameters?: NativeMigrationParameters): void;
  /** True if cancelled (or none runs); false once the final state is on its way. */
  migrateCancel(): boolean;
  migrationStats(): NativeMigrationStats | undefined;
  /** Changes the running migration's downtime budget and bandwidth cap. */
  setMigrationLimits(limits: Pick<NativeMigrationParameters, 'downtimeLimitMs' | 'maxBandwidth'>): void;
  stats(topN?: number): VmExitStats;
}

/** Where a VM's time went, as the VMM saw it (vmm-native/src/exit_stats.h). */
export interface VmExitStats {
  /** Exits that reached the VMM, by KVM exit reason ("io", "mmio", "intr", ...). */
  exitsByReason: Record<string, number>;
  topIoPorts: Array<{ port: number; exits: number }>;
  /** Guest-physical addresses. */
  topMmio: Array<{ address: number; exits: number }>;
  /** VMM setup before start (create-vm, guest-memory, devices, load-guest, vcpus). */
  setupPhasesMs: Record<string, number>;
  /** start() to the guest's first console byte; -1 if none yet. */
  firstConsoleMs: number;
  /** KVM's own per-vCPU counters summed over the vCPUs (all exits, halt_exits, io_exits, ...); non-zero ones. */
  kvmVcpuStats: Record<string, number>;
  /** A paused VM's vCPUs: registers and the events KVM holds for each. */
  pausedVcpus?: string[];
}

export interface KvmProbeResult {
  available: boolean;
  error: string;
  apiVersion: number;
  runsStockGuests: boolean;
  kernelModeMips: number;
  detail: string;
}

/** A network interface as readNetState reports it. */
export interface NativeNetLink {
  index: number;
  name: string;
  /** From the link's ARPHRD type: what `ip -j` prints as link_type, other types as 'other'. */
  linkType: 'ether' | 'loopback' | 'other';
  /** 'aa:bb:cc:dd:ee:ff'; '' when the link has no hardware address. */
  mac: string;
  mtu: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** IPv4 only. */
  addresses: Array<{ address: string; prefixLength: number }>;
}

/** An IPv4 main-table route, its fields as `ip -j route show` prints them. */
export interface NativeNetRoute {
  /** 'default', 'a.b.c.d/len', or a host route's bare address. */
  destination: string;
  /** '' when none (a link route). */
  gateway: string;
  /** '' when none (e.g. a blackhole or multipath route). */
  device: string;
  /** As `ip route` names it ('kernel', 'boot', 'static', 'dhcp', ...: iproute2's stock rt_protos), else the number. */
  protocol: string;
}

export interface NativeNetState {
  links: NativeNetLink[];
  routes: NativeNetRoute[];
}

interface Addon {
  NativeVm: new (config: NativeVmConfig | NativeRestoreConfig, onEvent: (type: NativeEvent, a?: unknown, b?: unknown) => void) => NativeVm;
  NativeVmShell: new (vcpus: number, memoryBytes: number) => NativeVmShell;
  NativeMigrationIncoming: new (uri: string, options: NativeIncomingOptions, onEvent: (event: NativeIncomingEvent) => void) => NativeMigrationIncoming;
  probeKvm(): KvmProbeResult;
  /** mount(2): flags by mount(8)'s names (bind, rec, remount, ro, private, shared, slave, ...: util/mount-options.ts). */
  mount(request: { source: string; target: string; fstype: string; flags: string[]; data: string }): void;
  /** umount2(2): flags 'detach' (lazy), 'nofollow'. */
  unmount(target: string, flags: string[]): void;
  /**
   * A queue of a multi-queue tap (vnet header, up) in `netns` (a path; default: the caller's): its
   * fd, the caller's to close. A new tap, or with joinDetached a detached queue of an existing one.
   */
  openTap(options: { name: string; netns?: string; mtu?: number; joinDetached?: boolean }): number;
  /** Attaches (frames go to it) or detaches a queue openTap returned. */
  setTapQueue(fd: number, attached: boolean): void;
  /**
   * The links of the network namespace at `netns` (a path; '' the caller's) with their IPv4
   * addresses, and its IPv4 main-table routes, read over rtnetlink (no `ip` process).
   */
  readNetState(netns: string): NativeNetState;
  /**
   * In `netns`: an ingress qdisc on `from` whose matchall filter redirects every frame out of `to`
   * (`tc ... matchall action mirred egress redirect`). Throws naming the step and device; a qdisc
   * it added before its filter failed is removed.
   */
  addIngressRedirect(netns: string, from: string, to: string): void;
  /** Deletes `dev`'s ingress qdisc (and its filters) in `netns`; none, or no such device, is no error. */
  deleteIngress(netns: string, dev: string): void;
  /** A listening TCP socket on 127.0.0.1 (`port` 0 or absent: any free one) in `netns`: its fd, the caller's. */
  listenOnLoopback(options: { netns?: string; port?: number }): { fd: number; port: number };
  /** Where a connection accepted on `fd` was headed before an iptables REDIRECT/DNAT (SO_ORIGINAL_DST). */
  originalDestination(fd: number): { address: string; port: number };
  /** From now on every VMM thread (vCPU, device, migration) confines itself to its seccomp allow-list; for good. */
  enableSeccomp(): void;
  /** A spare daemon's handoff socket at `path` (0600, a stale file replaced): its fd (shim/launcher/spare.h). */
  listenForHandoff(path: string): number;
  /**
   * Blocks until a launcher hands over a pod on the handoff socket `fd` (and acknowledges it) or
   * `timeoutMs` passes (null). The fds are the caller's. Throws on a malformed handoff.
   */
  acceptHandoff(fd: number, timeoutMs: number): { strings: string[]; fds: number[]; peerPid: number } | null;
  /** Makes `fd` this process's stdout and stderr, and closes it. */
  redirectStdio(fd: number): void;
}

let addon: Addon | undefined;

export function loadAddon(): Addon {
  if (!addon) {
    const file = path.join(repoRoot(), 'vmm-native', 'build', 'Release', 'stencil_vmm.node');
    try {
      addon = createRequire(import.meta.url)(file) as Addon;
    } catch (err) {
      throw new Error(`cannot load the KVM addon ${file} (run 'make build'): ${(err as Error).message}`, { cause: err });
    }
  }
  return addon;
}

/**
 * Applies `[hypervisor] seccomp` to this process: when on, every VMM thread started from now on
 * (vCPUs, device loops and workers, migrations) is confined to the system calls its work needs
 * (vmm-native/src/host/seccomp.cc). Process-wide and one-way, like the filters themselves.
 */
export function confineVmmThreads(hypervisor: { seccomp: boolean }): void {
  if (hypervisor.seccomp) loadAddon().enableSeccomp();
}
