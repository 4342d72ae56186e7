// PodVm's options (pod-vm.ts), checked before anything is made, and the pod's state directory.
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_AGENT_PORT } from '../agent/vsock.js';
import type { VmProvider } from '../hypervisor/types.js';
import type { Logger } from '../util/log.js';
import { unmountAllUnder } from '../util/mounts.js';
import { PodVmError, validateId } from './pod-errors.js';
import type { PodIncoming, PodRestore } from './types.js';

const MAX_POD_ID = 128;
const MAX_UNIX_PATH = 107; // sun_path holds 108 bytes with the NUL

export interface PodVmOptions {
  /** Pod (sandbox) id: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 characters. Names the VM and its RAM file. */
  id: string;
  /** Absolute directory for the pod's host files; created (must be absent or empty), removed by shutdown(). */
  stateDir: string;
  /** Guest kernel (vmlinux or bzImage) and initramfs with the agent. */
  kernel: string;
  initrd: string;
  /** vCPUs and guest RAM in bytes; the VMM checks their limits (its error passes through). */
  vcpus: number;
  memoryBytes: number;
  /** Directory on tmpfs for the RAM file (memoryBacking 'tmpfs'). */
  memoryDir: string;
  memoryBacking: 'tmpfs' | 'memfd';
  /** Extra kernel command-line parameters, appended to the defaults. */
  kernelParams?: string;
  /** The guest's vsock CID (the VMM checks its range); default: a random one. */
  guestCid?: number;
  /** The agent's vsock port; default 1024. */
  agentPort?: number;
  /** How long to wait from boot until the agent answers, in ms; default 180 s. */
  agentTimeoutMs?: number;
  /** Default timeout of agent calls in ms (waitProcess has none); default 60 s. */
  callTimeoutMs?: number;
  logger?: Logger;
  /** How the pod's VM is obtained; default: boot a fresh MicroVm. */
  vmProvider?: VmProvider;
  /**
   * The pod's network namespace, set up by CNI (CRI's sandbox spec names it): its interface is
   * joined to the VM's NIC (network/pod-network.ts). None: the NIC stays on no wire.
   */
  networkNamespace?: string;
  /**
   * The pod's net.* sysctls (the sandbox spec's, guest-spec.ts podNetworkSysctls), written with the
   * guest's first setup rather than in a round trip of their own when the sandbox is created.
   */
  networkSysctls?: Record<string, string>;
  /**
   * Instead of a new VM, the one a checkpoint saved (checkpoint.ts): its container's files are
   * shared again at the same guest paths before it runs on, and the container is thawed if the
   * checkpoint froze it.
   */
  restore?: PodRestore;
  /** Instead of a new VM, the running one another shim daemon migrates here (pod/vm-incoming.ts). */
  incoming?: PodIncoming;
  /**
   * What holds a CRI pod's namespaces ([runtime] sandbox_pause): "agent", the agent's own pause
   * process when the sandbox's spec allows it (guest-spec.ts pauseHolder), the configuration's
   * default; "image" (when absent here), crun running the sandbox image's /pause.
   */
  sandboxPause?: 'agent' | 'image';
}

export function validateOptions(o: PodVmOptions): void {
  const bad = (msg: string) => new PodVmError('INVALID_ARGUMENT', `pod ${o.id}: ${msg}`);
  validateId('pod', o.id, MAX_POD_ID);
  if (typeof o.stateDir !== 'string' || !path.isAbsolute(o.stateDir))
    throw bad(`stateDir must be an absolute path, got ${JSON.stringify(o.stateDir)}`);
  const vsockPath = path.join(o.stateDir, 'vsock.sock');
  if (Buffer.byteLength(vsockPath) > MAX_UNIX_PATH)
    throw bad(`stateDir ${o.stateDir} is too long: the socket path ${vsockPath} exceeds ${MAX_UNIX_PATH} bytes`);
  for (const [name, file] of [['kernel', o.kernel], ['initrd', o.initrd]] as const) {
    if (typeof file !== 'string' || !file) throw bad(`no ${name} given`);
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch (err) {
      throw bad(`${name} ${file} cannot be read: ${(err as Error).message}`);
    }
    if (!st.isFile()) throw bad(`${name} ${file} is not a regular file`);
  }
  if (o.memoryBacking !== 'tmpfs' && o.memoryBacking !== 'memfd')
    throw bad(`memoryBacking must be "tmpfs" or "memfd", got ${JSON.stringify(o.memoryBacking)}`);
  if (o.memoryBacking === 'tmpfs' && (typeof o.memoryDir !== 'string' || !path.isAbsolute(o.memoryDir)))
    throw bad(`memoryDir must be an absolute path, got ${JSON.stringify(o.memoryDir)}`);
  const port = o.agentPort ?? DEFAULT_AGENT_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 0xffffffff) throw bad(`agentPort must be an integer in 1..4294967295, got ${port}`);
  for (const name of ['agentTimeoutMs', 'callTimeoutMs'] as const) {
    const v = o[name];
    if (v !== undefined && (!Number.isFinite(v) || v <= 0)) throw bad(`${name} must be a positive number of ms, got ${v}`);
  }
  if (o.kernelParams !== undefined && (typeof o.kernelParams !== 'string' || /[\n\0]/.test(o.kernelParams)))
    throw bad('kernelParams must be a single-line string');
}

/** Creates `dir` (and its parents); an existing directory must be empty. */
export function createStateDir(id: string, dir: string): void {
  try {
    fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o755 });
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
      throw new PodVmError('INTERNAL', `pod ${id}: cannot create the state directory ${dir}: ${(err as Error).message}`);
    if (!fs.statSync(dir).isDirectory()) throw new PodVmError('INVALID_ARGUMENT', `pod ${id}: state directory ${dir} is not a directory`);
    if (fs.readdirSync(dir).length > 0)
      throw new PodVmError('ALREADY_EXISTS', `pod ${id}: state directory ${dir} is not empty (is another pod using it?)`);
  }
}

/**
 * Removes a pod's state directory once nothing is mounted below it (what is, a container's rootfs
 * or the share view, is detached first): files are never removed through a mount. Returns what
 * kept it, if anything.
 */
export async function removeStateDir(dir: string): Promise<string[]> {
  const left = await unmountAllUnder(dir);
  if (left.length) return [`still mounted under ${dir}, so it was kept: ${left.join('; ')}`];
  try {
    fs.rmSync(dir, { recursive: true, force: true });
    return [];
  } catch (err) {
    return [`removing ${dir}: ${(err as Error).message}`];
  }
}
