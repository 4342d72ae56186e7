// A container's OCI spec as the guest must see it. The spec containerd hands the shim speaks of
// the host: the rootfs path, namespace paths (CRI's pod network namespace, the sandbox's
// /proc/<pid>/ns/* files, where <pid> is the shim's), and bind mounts of host files and
// directories (CRI's /etc/hosts, resolv.conf, volumes). The guest gets:
// - root.path: the rootfs under the pod's 9p share;
// - namespaces: a network namespace with a path is dropped (the pod's containers share the VM's,
//   which holds the pod's NIC), and with it the spec's net.* sysctls, which PodVm writes into the
//   VM's network namespace instead (crun sets them only in a namespace it creates; containerd 2.x
//   gives every pod net.ipv4.ip_unprivileged_port_start); other namespaces with a path join the
//   sandbox container's, by its guest pid, or, before any sandbox exists, are made new;
// - bind mounts of host paths: their sources become the shared copies under the pod's share
//   (PodVm binds them there, read-only ones read-only on the host too); /dev/shm becomes a tmpfs
//   of the guest's own (shared memory over 9p makes no sense).
import path from 'node:path';
import type { PauseHolder } from '../agent/client.js';

/** A host file or directory a container bind-mounts, shared with the guest by PodVm. */
export interface HostVolume {
  /** Index in spec.mounts. */
  index: number;
  source: string;
  destination: string;
  readOnly: boolean;
}

interface OciMount {
  destination?: string;
  type?: string;
  source?: string;
  options?: string[];
}

interface OciNamespace {
  type?: string;
  path?: string;
}

function isBind(m: OciMount): boolean {
  return m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind');
}

/** The bind mounts of host paths in `spec` that the guest needs shared (not /dev/shm). */
export function hostVolumes(spec: Record<string, unknown>): HostVolume[] {
  const mounts = (Array.isArray(spec.mounts) ? spec.mounts : []) as OciMount[];
  const out: HostVolume[] = [];
  mounts.forEach((m, index) => {
    if (!isBind(m) || typeof m.source !== 'string' || !path.isAbsolute(m.source) || m.destination === '/dev/shm') return;
    out.push({ index, source: m.source, destination: String(m.destination ?? ''), readOnly: (m.options ?? []).includes('ro') });
  });
  return out;
}

export interface GuestSpecOptions {
  /** root.path in the guest. */
  rootfs: string;
  /** The guest pid of the pod's sandbox container, whose namespaces the others join. */
  sandboxPid?: number;
  /** spec.mounts index -> the guest path of its shared copy (see hostVolumes). */
  volumes: Map<number, string>;
  /** The OCI version the guest's runtime takes. */
  ociVersion: string;
}

/** Whether the spec joins a network namespace by path (CRI's pod netns), which the guest drops. */
function joinsNetworkByPath(linux: Record<string, unknown> | undefined): boolean {
  return !!linux && Array.isArray(linux.namespaces) && (linux.namespaces as OciNamespace[]).some((ns) => ns.type === 'network' && !!ns.path);
}

/**
 * The spec's sysctls split in two when it joins the pod's network namespace by path: the net.*
 * ones, which belong to the VM's network namespace, and the rest. Undefined otherwise.
 */
function splitSysctls(linux: Record<string, unknown> | undefined): { pod: Record<string, string>; rest: Record<string, unknown> } | undefined {
  if (!joinsNetworkByPath(linux) || typeof linux!.sysctl !== 'object' || linux!.sysctl === null) return undefined;
  const pod: Record<string, string> = {};
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(linux!.sysctl as Record<string, unknown>)) {
    if (key.startsWith('net.') || key.startsWith('net/')) pod[key] = String(value);
    else rest[key] = value;
  }
  return { pod, rest };
}

/** The spec's net.* sysctls that belong to the VM's network namespace (see guestSpec). */
export function podNetworkSysctls(spec: Record<string, unknown>): Record<string, string> {
  return splitSysctls(spec.linux as Record<string, unknown> | undefined)?.pod ?? {};
}

export function guestSpec(spec: Record<string, unknown>, o: GuestSpecOptions): Record<string, unknown> {
  const root = (spec.root ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = { ...spec, ociVersion: o.ociVersion, root: { ...root, path: o.rootfs } };
  const linux = spec.linux as Record<string, unknown> | undefined;
  if (linux && Array.isArray(linux.namespaces)) {
    const namespaces: OciNamespace[] = [];
    for (const ns of linux.namespaces as OciNamespace[]) {
      if (!ns.path) namespaces.push(ns);
      else if (ns.type === 'network') continue;
      else if (o.sandboxPid) namespaces.push({ type: ns.type, path: `/proc/${o.sandboxPid}/ns/${nsFile(ns.type)}` });
      else namespaces.push({ type: ns.type });
    }
    const sysctls = splitSysctls(linux);
    out.linux = { ...linux, namespaces, ...(sysctls ? { sysctl: sysctls.rest } : {}) };
  }
  if (Array.isArray(spec.mounts)) {
    out.mounts = (spec.mounts as OciMount[]).map((m, i) => {
      const shared = o.volumes.get(i);
      if (shared) return { ...m, source: shared };
      if (m.destination === '/dev/shm' && isBind(m))
        return { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] };
      return m;
    });
  }
  return out;
}

/** The /proc/<pid>/ns entry of an OCI namespace type. */
function nsFile(type: string | undefined): string {
  switch (type) {
    case 'mount':
      return 'mnt';
    case 'network':
      return 'net';
    default:
      return String(type);
  }
}

/** The namespaces the agent's pause process can make (proto PauseHolder). */
const PAUSE_NAMESPACES = new Set(['pid', 'ipc', 'uts', 'mount', 'cgroup']);

/**
 * For a CRI sandbox container whose process is the pause image's `/pause`: what the agent's own
 * pause process needs to hold the pod instead (proto PauseHolder), so the guest runs no crun and
 * shares no rootfs for it. Undefined when its spec asks for anything that process would not honour
 * the same way (another command, a terminal, a namespace joined by path other than the pod's
 * network, a user namespace, a cgroup path that is not a plain absolute one): crun runs it then.
 */
export function pauseHolder(id: string, spec: Record<string, unknown>): PauseHolder | undefined {
  const annotations = (spec.annotations ?? {}) as Record<string, unknown>;
  if (annotations['io.kubernetes.cri.container-type'] !== 'sandbox') return undefined;
  const proc = (spec.process ?? {}) as { args?: unknown; terminal?: unknown };
  if (!Array.isArray(proc.args) || proc.args.length !== 1 || proc.args[0] !== '/pause' || proc.terminal) return undefined;
  const linux = (spec.linux ?? {}) as { namespaces?: OciNamespace[]; cgroupsPath?: unknown };
  const namespaces: string[] = [];
  for (const ns of linux.namespaces ?? []) {
    if (ns.type === 'network' && ns.path) continue; // the pod's: the VM's own
    if (ns.path || !PAUSE_NAMESPACES.has(String(ns.type))) return undefined;
    namespaces.push(String(ns.type));
  }
  // containerd's CRI gives "<parent>/<id>" (just "<id>" with no cgroup parent), or systemd's
  // "<slice>:cri-containerd:<id>", which crun's cgroupfs manager reads its own way.
  const cgroupsPath = linux.cgroupsPath ?? id;
  if (typeof cgroupsPath !== 'string') return undefined;
  const components = cgroupsPath.split('/').filter((c, i) => i > 0 || c !== '');
  if (!components.length || components.some((c) => !/^[A-Za-z0-9_.@-]+$/.test(c) || c === '.' || c === '..')) return undefined;
  return {
    namespaces,
    hostname: typeof spec.hostname === 'string' ? spec.hostname : '',
    // A relative path is under crun's own cgroup, which is the agent's: the guest's root.
    cgroup: `/${components.join('/')}`,
  };
}
