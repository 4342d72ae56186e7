// Where a pod's shim daemon listens and keeps its state, derived (like containerd's Go and Rust
// shim libraries do) from containerd's address, the namespace and the grouping id, so every
// `start` of the same pod finds the same daemon and `delete` finds what a dead one left.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { readSpec } from './bundle.js';

/** Fixed by convention (not containerd's state dir): containerd's shims put sockets here. */
export const SOCKET_DIR = '/run/containerd/s';

const SANDBOX_ANNOTATIONS = ['io.kubernetes.cri.sandbox-id'];

/** The pod a task belongs to: the CRI sandbox id from the bundle's config.json, else the task id. */
export function groupId(bundle: string, taskId: string): string {
  try {
    const spec = readSpec(bundle) as { annotations?: Record<string, string> };
    for (const key of SANDBOX_ANNOTATIONS) {
      const v = spec.annotations?.[key];
      if (typeof v === 'string' && v) return v;
    }
  } catch {
    // No readable spec: the task is its own group.
  }
  return taskId;
}

function hash(...parts: string[]): string {
  return crypto.createHash('sha256').update(path.join(...parts)).digest('hex');
}

export function socketPath(containerdAddress: string, namespace: string, group: string): string {
  return path.join(SOCKET_DIR, hash(containerdAddress, namespace, group));
}

/**
 * A short key naming the pod's state directory and VM (short: the state directory holds the
 * vsock socket, whose path must fit sun_path).
 */
export function podKey(containerdAddress: string, namespace: string, group: string): string {
  return hash(containerdAddress, namespace, group).slice(0, 24);
}

export function podStateDir(stateDir: string, key: string): string {
  return path.join(stateDir, key);
}

/** The VM's name; its RAM file is <memory_dir>/<name>.ram. */
export function podVmName(key: string): string {
  return `pod-${key}`;
}

/** Whether a daemon answers on `sock` (a refused or missing socket is stale). */
export function isListening(sock: string, timeoutMs = 2_000): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(sock);
    const timer = setTimeout(() => done(false), timeoutMs);
    function done(ok: boolean) {
      clearTimeout(timer);
      c.destroy();
      resolve(ok);
    }
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
  });
}

const DAEMON_ADDRESS_SUFFIX = '.address';

/**
 * Where `start` records the bootstrap address it gave out for the daemon on `sock` (a plain
 * ttrpc address or gRPC's JSON): a later `start` of the same pod (each CRI app container) answers
 * from it without loading the configuration. It goes with the socket.
 */
export function daemonAddressPath(sock: string): string {
  return `${sock}${DAEMON_ADDRESS_SUFFIX}`;
}

/** The socket whose recorded address `file` is (daemonAddressPath's inverse), or undefined if it is none. */
export function socketOfDaemonAddress(file: string): string | undefined {
  return file.endsWith(DAEMON_ADDRESS_SUFFIX) ? file.slice(0, -DAEMON_ADDRESS_SUFFIX.length) : undefined;
}

/** The address recorded for the daemon on `sock`, or undefined (none, or unreadable). */
export function readDaemonAddress(sock: string): string | undefined {
  try {
    return fs.readFileSync(daemonAddressPath(sock), 'utf8') || undefined;
  } catch {
    return undefined;
  }
}

/** Removes the daemon's socket and its recorded address; what existed of them. */
export function removeDaemonSocket(sock: string): string[] {
  return [sock, daemonAddressPath(sock)].filter((p) => {
    const existed = fs.existsSync(p);
    fs.rmSync(p, { force: true });
    return existed;
  });
}

/** Writes `<bundle>/address` atomically (containerd 1.6/1.7 reconnect through it). */
export function writeAddressFile(bundle: string, address: string): void {
  writeAtomically(path.join(bundle, 'address'), address);
}

/** Records the address given out for the daemon on `sock` (daemonAddressPath), atomically. */
export function writeDaemonAddress(sock: string, address: string): void {
  writeAtomically(daemonAddressPath(sock), address);
}

function writeAtomically(file: string, content: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}`);
  fs.writeFileSync(tmp, content, { mode: 0o600 });
  fs.renameSync(tmp, file);
}
