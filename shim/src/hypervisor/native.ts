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
}

export type NativeEvent = 'console' | 'paused' | 'exited';

export interface NativeVm {
  start(): void;
  pause(): void;
  resume(): void;
  stop(): void;
  destroy(): void;
  sendConsoleInput(data: Buffer): void;
  info(): { cmdline: string; memoryPath: string; memoryBytes: number };
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
}

export interface KvmProbeResult {
  available: boolean;
  error: string;
  apiVersion: number;
  runsStockGuests: boolean;
  kernelModeMips: number;
  detail: string;
}

interface Addon {
  NativeVm: new (config: NativeVmConfig, onEvent: (type: NativeEvent, a?: unknown, b?: unknown) => void) => NativeVm;
  probeKvm(): KvmProbeResult;
}

let addon: Addon | undefined;

export function loadAddon(): Addon {
  if (!addon) {
    const file = path.join(repoRoot(), 'vmm-native', 'build', 'Release', 'stencil_vmm.node');
    try {
      addon = createRequire(import.meta.url)(file) as Addon;
    } catch (err) {
      throw new Error(`cannot load the KVM addon ${file} (run 'make build'): ${(err as Error).message}`);
    }
  }
  return addon;
}
