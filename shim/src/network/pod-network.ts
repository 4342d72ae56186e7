// A pod's network, as Kata's default "tcfilter" model does it: CNI has put a veth (eth0) with the
// pod's IP in the pod's network namespace; the shim adds a tap next to it and joins the two with tc
// (everything arriving on the veth is redirected out of the tap, to the VM, and everything the VM
// sends comes in on the tap and is redirected out of the veth). The guest's NIC then takes the
// veth's MAC, addresses and routes, so to the rest of the cluster the VM *is* the veth's end.
// The tap lives as long as an fd to it is open (the shim's and the VM's duplicate). The namespace
// is read and the redirects made over rtnetlink by the addon (host/netlink.h), not by `ip`/`tc`
// processes: each of those cost ~0.3 s under emulation.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { ErrorCode, type CodedError } from '../../../common/src/errors.js';
import { loadAddon, type NativeNetLink, type NativeNetRoute, type NativeNetState } from '../hypervisor/native.js';
import type { Logger } from '../util/log.js';

/** The tap's name in the pod's namespace (Kata calls its own tap0_kata). */
export const TAP_NAME = 'tap0_stencil';
/** The guest's name of its virtio-net interface. */
export const GUEST_INTERFACE = 'eth0';
const COMMAND_TIMEOUT_MS = 30_000;

export class PodNetworkError extends Error implements CodedError {
  override name = 'PodNetworkError';
  constructor(readonly code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** What the guest's NIC is given (agent SetupGuest). */
export interface GuestInterface {
  name: string;
  mac: string;
  mtu: number;
  /** CIDR, e.g. 10.240.0.7/24. */
  addresses: string[];
}

export interface GuestRoute {
  /** CIDR or "default". */
  destination: string;
  gateway: string;
  device: string;
}

export interface PodNetwork {
  /** The pod's network namespace (a path, e.g. /var/run/netns/cni-...). */
  readonly netns: string;
  /** The CNI interface in it the tap is joined to. */
  readonly hostInterface: string;
  /** The tap: the VM's virtio-net backend (the VM takes a duplicate). */
  readonly tapFd: number;
  readonly guestInterface: GuestInterface;
  readonly routes: GuestRoute[];
  /**
   * Closes the shim's tap fd and, when this pod owns the redirects (it made them, or took them
   * over), removes them (the namespace may already be gone).
   */
  detach(): Promise<void>;
  /**
   * A pod that joined the tap of a pod migrating here (adoptPodNetwork): its queue starts
   * receiving, and the redirects become this pod's to remove.
   */
  takeOver(): void;
  /** The pod's VM went to another shim daemon, which holds the tap and owns the redirects: close the fd only. */
  handOver(): void;
}

/**
 * Runs a command in the network namespace at `netns` through util-linux's nsenter, both found on
 * PATH (as `stencil check`'s host-tools line checks them), with `input` on its stdin; resolves
 * with its stdout. (port-forward.ts's iptables; what rtnetlink does goes through the addon.)
 */
export function inNetns(netns: string, args: string[], input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('nsenter', [`--net=${netns}`, ...args], { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (!err) return resolve(String(stdout));
      const detail = String(stderr).trim() || err.message;
      const batch = input ? ` with input ${JSON.stringify(input.trim())}` : '';
      reject(new PodNetworkError(ErrorCode.Internal, `in network namespace ${netns}: \`${args.join(' ')}\`${batch} failed: ${detail}`, { cause: err }));
    });
    child.stdin?.on('error', () => undefined); // a command that exits early: its error says why
    child.stdin?.end(input);
  });
}

/** Runs an rtnetlink call of the addon; its error (which names the namespace, step and device) as a PodNetworkError. */
function netlink<T>(call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw new PodNetworkError(ErrorCode.Internal, (err as Error).message, { cause: err });
  }
}

/**
 * The network namespace a container's OCI spec joins (linux.namespaces[type=network].path), or
 * undefined when it makes a new one or shares the host's (no pod network to carry into the VM).
 */
export function networkNamespaceOf(spec: Record<string, unknown>): string | undefined {
  const linux = spec.linux as { namespaces?: Array<{ type?: string; path?: string }> } | undefined;
  const ns = linux?.namespaces?.find((n) => n.type === 'network');
  return ns?.path ? ns.path : undefined;
}

/** The interface CNI set up: the one Ethernet link with an IPv4 address (not loopback, not our tap). */
export function pickCniInterface(links: NativeNetLink[]): NativeNetLink | undefined {
  const candidates = links.filter((l) => l.name !== 'lo' && l.name !== TAP_NAME && l.linkType === 'ether' && l.addresses.length > 0);
  return candidates.find((l) => l.name === 'eth0') ?? candidates[0];
}

/** Routes through that interface as the guest must have them (the kernel's own link routes come with the addresses). */
export function guestRoutes(routes: NativeNetRoute[], hostInterface: string): GuestRoute[] {
  return routes
    .filter((r) => r.device === hostInterface && r.protocol !== 'kernel')
    .map((r) => ({ destination: r.destination, gateway: r.gateway, device: GUEST_INTERFACE }));
}

/** Removes `dev`'s ingress qdisc in `netns` where it can: for clean-ups that have nothing to report. */
function deleteIngressQuietly(netns: string, dev: string): void {
  try {
    loadAddon().deleteIngress(netns, dev);
  } catch {
    // the caller's clean-up goes on
  }
}

/** The CNI interface of `netns` and what the guest's NIC must become; undefined when there is none. */
function readPodInterfaces(netns: string, log?: Logger): { cni: NativeNetLink; guestInterface: GuestInterface; routes: GuestRoute[]; links: NativeNetLink[] } | undefined {
  if (!fs.existsSync(netns)) throw new PodNetworkError(ErrorCode.InvalidArgument, `the pod's network namespace ${netns} does not exist`);
  const state: NativeNetState = netlink(() => loadAddon().readNetState(netns));
  const cni = pickCniInterface(state.links);
  if (!cni) {
    log?.info('the pod network namespace has no CNI interface: no pod network', { netns, interfaces: state.links.map((l) => l.name) });
    return undefined;
  }
  const guestInterface: GuestInterface = {
    name: GUEST_INTERFACE,
    mac: cni.mac,
    mtu: cni.mtu || 1500,
    addresses: cni.addresses.map((a) => `${a.address}/${a.prefixLength}`),
  };
  return { cni, guestInterface, routes: guestRoutes(state.routes, cni.name), links: state.links };
}

/**
 * Joins a tap to the CNI interface in `netns` and describes what the guest's NIC must become.
 * Undefined when the namespace has no such interface (nothing to carry). On failure nothing is
 * left behind.
 */
export async function attachPodNetwork(netns: string, log?: Logger): Promise<PodNetwork | undefined> {
  const found = readPodInterfaces(netns, log);
  if (!found) return undefined;
  const { cni, guestInterface, routes } = found;
  const tapFd = loadAddon().openTap({ name: TAP_NAME, netns, mtu: guestInterface.mtu });
  // Each way: an ingress qdisc whose filter sends every frame out of the other device.
  try {
    netlink(() => {
      loadAddon().addIngressRedirect(netns, cni.name, TAP_NAME);
      loadAddon().addIngressRedirect(netns, TAP_NAME, cni.name);
    });
  } catch (err) {
    for (const dev of [cni.name, TAP_NAME]) deleteIngressQuietly(netns, dev); // the error above says what went wrong
    fs.closeSync(tapFd);
    throw err;
  }
  log?.info('pod network attached', { netns, hostInterface: cni.name, tap: TAP_NAME, ...guestInterface, routes });
  return podNetwork({ netns, hostInterface: cni.name, tapFd, guestInterface, routes }, true);
}

/**
 * The network of a pod migrating here from another shim daemon on this host: its tap (joined as
 * a detached queue: the VM there still runs) and redirects stay as they are; takeOver() makes them
 * this pod's when its VM starts. The guest's NIC keeps its configuration.
 */
export async function adoptPodNetwork(netns: string, log?: Logger): Promise<PodNetwork | undefined> {
  const found = readPodInterfaces(netns, log);
  if (!found) return undefined;
  const { cni, guestInterface, routes, links } = found;
  if (!links.some((l) => l.name === TAP_NAME)) {
    throw new PodNetworkError(ErrorCode.FailedPrecondition, `the pod's network namespace ${netns} has no ${TAP_NAME} to take over (the migrating pod's VM has no network)`);
  }
  const tapFd = loadAddon().openTap({ name: TAP_NAME, netns, joinDetached: true });
  log?.info('pod network joined for a migration', { netns, hostInterface: cni.name, tap: TAP_NAME });
  return podNetwork({ netns, hostInterface: cni.name, tapFd, guestInterface, routes }, false);
}

function podNetwork(n: Omit<PodNetwork, 'detach' | 'takeOver' | 'handOver'>, ownsRedirects: boolean): PodNetwork {
  let closed = false;
  const close = () => {
    if (closed) return false;
    closed = true;
    fs.closeSync(n.tapFd);
    return true;
  };
  return {
    ...n,
    async detach() {
      if (!close() || !ownsRedirects) return;
      // The tap goes with the VM's fd; CNI deletes the veth (and its qdisc) on teardown. A pod
      // that ends without that still leaves the namespace as it found it.
      if (fs.existsSync(n.netns)) deleteIngressQuietly(n.netns, n.hostInterface); // a failure: the namespace is going away with the pod
    },
    takeOver() {
      loadAddon().setTapQueue(n.tapFd, true);
      ownsRedirects = true;
    },
    handOver() {
      ownsRedirects = false;
      if (closed) return;
      // The VM's duplicate shares this queue: detached, every frame goes to the new daemon's.
      try {
        loadAddon().setTapQueue(n.tapFd, false);
      } catch {
        // detached already
      }
      close();
    },
  };
}
