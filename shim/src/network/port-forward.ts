// CRI PortForward (`kubectl port-forward`) for a VM pod. containerd serves it by dialing
// 127.0.0.1:<port> inside the pod's network namespace on the host, but a VM pod's processes
// listen in the guest, and the tc redirect joins the namespace's veth to the VM without any
// host-side endpoint. So the shim listens on one loopback port in that namespace, an iptables
// DNAT there sends every loopback TCP connection to it (nothing else of the pod uses that
// namespace's loopback), SO_ORIGINAL_DST tells which port each one was for, and the agent opens
// that port on the guest's 127.0.0.1. Closed ports are answered with a reset, as a refused
// connect would be.
import fs from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { loadAddon } from '../hypervisor/native.js';
import type { Logger } from '../util/log.js';
import { inNetns } from './pod-network.js';

/** Opens a connection to a port on the guest's loopback (AgentClient.openPort). */
export type GuestPortOpener = (port: number) => Promise<Duplex>;

export interface PortForwarder {
  /** The shim's listener in the pod's namespace. */
  readonly listenPort: number;
  /** Stops forwarding: the rule, the listener and every forwarded connection go. */
  close(): Promise<void>;
}

/**
 * The rule (nat OUTPUT of the pod's namespace) as iptables arguments after -A/-D. DNAT rather
 * than REDIRECT: the same effect here, and it needs only xt_nat, which every NAT-capable kernel has.
 */
function redirectRule(listenPort: number): string[] {
  return ['OUTPUT', '-o', 'lo', '-p', 'tcp', '-d', '127.0.0.1/32', '-j', 'DNAT', '--to-destination', `127.0.0.1:${listenPort}`];
}

/**
 * Starts forwarding loopback TCP in `netns` into the guest. Never rejects: undefined (and a
 * warning) when this host cannot listen or redirect there (no iptables, or a kernel without the
 * nat table): the pod runs, only PortForward does not reach it.
 */
export async function forwardPodPorts(netns: string, openGuestPort: GuestPortOpener, log?: Logger): Promise<PortForwarder | undefined> {
  let server: net.Server | undefined;
  let fd: number | undefined;  // the listening socket, the server's once it listens on it
  try {
    const listener = loadAddon().listenOnLoopback({ netns });
    fd = listener.fd;
    const listenPort = listener.port;
    const connections = new Set<net.Socket>();
    const listening = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
      connections.add(client);
      client.once('close', () => connections.delete(client));
      forward(client, openGuestPort, log);
    });
    server = listening;
    // Never waits forever: the pod's teardown awaits this.
    await new Promise<void>((resolve, reject) => {
      listening.once('error', reject);
      listening.listen({ fd }, () => {
        listening.off('error', reject);
        resolve();
      });
    });
    listening.on('error', (err) => log?.warn('port forwarding listener failed', { netns, error: err.message }));
    await inNetns(netns, ['iptables', '-w', '5', '-t', 'nat', '-A', ...redirectRule(listenPort)]);
    log?.info('forwarding the pod namespace\'s loopback TCP into the guest', { netns, listenPort });
    let closed: Promise<void> | undefined;
    return {
      listenPort,
      close() {
        closed ??= (async () => {
          const stopped = new Promise<void>((resolve) => listening.close(() => resolve()));
          for (const c of connections) c.destroy();
          await stopped;
          // CNI's teardown deletes the namespace with its rules; a pod that ends without that
          // leaves the namespace as it found it.
          await inNetns(netns, ['iptables', '-w', '5', '-t', 'nat', '-D', ...redirectRule(listenPort)]).catch(() => undefined);
        })();
        return closed;
      },
    };
  } catch (err) {
    if (server?.listening) server.close();
    else if (fd !== undefined) fs.closeSync(fd);  // a failed listen leaves it ours
    log?.warn('PortForward will not reach this pod: cannot listen or redirect loopback connections in its network namespace', { netns, error: (err as Error).message });
    return undefined;
  }
}

/** Carries one redirected connection into the guest, both halves and resets included. */
function forward(client: net.Socket, openGuestPort: GuestPortOpener, log?: Logger): void {
  const fd = (client as unknown as { _handle?: { fd?: number } })._handle?.fd;
  let port: number;
  try {
    if (fd === undefined || fd < 0) throw new Error('the accepted socket has no file descriptor');
    port = loadAddon().originalDestination(fd).port;
  } catch (err) {
    log?.warn('a port-forward connection without its original destination was reset', { error: (err as Error).message });
    client.resetAndDestroy();
    return;
  }
  client.on('error', () => undefined);  // a reset by containerd: the guest side is destroyed below
  // Through a promise even if the opener throws at once (no agent yet, or the pod is going away):
  // a throw here would escape the server's connection handler and end the shim daemon.
  Promise.resolve(port).then(openGuestPort).then(
    (guest) => {
      if (client.destroyed) {
        guest.destroy();
        return;
      }
      guest.on('error', (err) => {
        log?.debug('port-forward guest connection ended by error', { port, error: err.message });
        if (!client.destroyed) client.resetAndDestroy();
      });
      client.on('close', (hadError) => {
        if (hadError) guest.destroy();
      });
      guest.pipe(client);
      client.pipe(guest);
      client.resume();
      log?.debug('forwarding a connection into the guest', { port });
    },
    (err: Error) => {
      log?.debug('port-forward target refused in the guest', { port, error: err.message });
      client.resetAndDestroy();
    },
  );
}
