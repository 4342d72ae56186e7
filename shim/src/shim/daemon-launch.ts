// A new shim daemon for `start` (start.ts): reads (and so validates) the configuration named by
// containerd's runtime options, binds the pod's socket and spawns the daemon on it. The daemon
// never inherits start's stdout/stderr (containerd waits for both to close); it logs into the
// bundle's `log` FIFO.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { loadConfig, type Transport } from '../../../runtime-config/src/config.js';
import { decodeRuntimeOptions } from '../containerd/runtime-options.js';
import { isListening, removeDaemonSocket, SOCKET_DIR, writeDaemonAddress } from './address.js';
import { DAEMON_LAUNCH_TOOLS, withoutDroppedCapabilities } from './daemon-privileges.js';
import type { ShimFlags } from './flags.js';
import { commandOnPath } from '../util/paths.js';

/** Spawns the daemon for `sock` (unless a concurrent start did) and returns its bootstrap address. */
export async function launchDaemon(flags: ShimFlags, bundle: string, sock: string, stdin: Buffer): Promise<string> {
  const configPath = stdin.length > 0 ? configPathFromOptions(stdin) : '';
  // A broken file fails `ctr run` with its message.
  const { config, source } = loadConfig({ path: configPath });
  const protocol = chooseProtocol(config.runtime.transport);
  const address = protocol === 'grpc' ? JSON.stringify({ version: 3, address: sock, protocol: 'grpc' }) : `unix://${sock}`;
  if (!(await isListening(sock))) {
    fs.mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o711 });
    removeDaemonSocket(sock); // stale: its daemon is gone
    const started = await spawnDaemon(flags, bundle, sock, protocol, source === 'defaults' ? '' : source, address);
    // Lost a race with a concurrent start of the same pod: use the winner.
    if (!started && !(await isListening(sock))) throw new Error(`the shim daemon for ${flags.id} did not start (see containerd's log)`);
  }
  return address;
}

/**
 * Binds the pod's socket here and hands the listening fd to the daemon (as containerd's Go shims
 * do), so the address is good at once while Node starts up in the daemon: connections wait in the
 * socket's backlog. False if a concurrent start of the same pod bound it first.
 */
async function spawnDaemon(flags: ShimFlags, bundle: string, sock: string, protocol: 'ttrpc' | 'grpc', config: string, address: string): Promise<boolean> {
  // A missing program would otherwise surface only as a daemon that never answers.
  for (const tool of DAEMON_LAUNCH_TOOLS) {
    if (!commandOnPath(tool)) throw new Error(`cannot run the shim daemon: ${tool} (util-linux) is not on PATH`);
  }
  const listener = net.createServer();
  const bound = await new Promise<boolean>((resolve, reject) => {
    listener.once('error', (err: NodeJS.ErrnoException) =>
      err.code === 'EADDRINUSE' ? resolve(false) : reject(new Error(`cannot listen on ${sock}: ${err.message}`)),
    );
    listener.listen(sock, () => resolve(true));
  });
  if (!bound) return false;
  fs.chmodSync(sock, 0o600);
  writeDaemonAddress(sock, address);
  // The daemon's stderr is the bundle's `log` FIFO (containerd holds it open, so this never blocks).
  let logFd: number | 'ignore' = 'ignore';
  try {
    logFd = fs.openSync(path.join(bundle, 'log'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    // No log FIFO (e.g. run by hand): logs are dropped.
  }
  const args = [
    process.argv[1]!,
    '-namespace', flags.namespace,
    '-id', flags.id,
    '-address', flags.address,
    '-publish-binary', flags.publishBinary,
    '-socket', sock,
    '-socket-fd', '3',
    '-protocol', protocol,
    '-config', config,
    ...(flags.debug ? ['-debug'] : []),
    'serve',
  ];
  // Node exposes a listening socket's fd only on its handle.
  const fd = (listener as unknown as { _handle: { fd: number } })._handle.fd;
  // The daemon gets a mount namespace of its own (host mounts still propagate in): the container
  // rootfs and share mounts it makes are invisible outside and vanish with it, even if it is killed.
  // It runs without the capabilities it never needs (daemon-privileges.ts).
  const command = ['--mount', '--propagation', 'slave', '--', ...withoutDroppedCapabilities(), process.execPath, ...args];
  const child = spawn('unshare', command, {
    cwd: bundle,
    detached: true,
    stdio: ['ignore', logFd, logFd, fd],
    env: process.env,
  });
  if (typeof logFd === 'number') fs.closeSync(logFd);
  child.unref();
  // Not listener.close() afterwards: that would unlink the socket the daemon now serves.
  return new Promise((resolve, reject) => {
    child.once('spawn', () => resolve(true));
    child.once('error', (err) => reject(new Error(`cannot run the shim daemon: ${err.message}`)));
  });
}

/**
 * `auto` is ttrpc with a plain address, which every containerd (1.6 to 2.x) understands. gRPC
 * (bootstrap JSON version 3) must be asked for with transport = "grpc", and only for containerd
 * 2.x: 1.6 cannot parse JSON and 1.7 rejects version 3, and containerd's environment cannot tell
 * 1.7 from 2.x (MAX_SHIM_VERSION is 2 on both). containerd 2.1.9 also has a race with gRPC shims:
 * it watches the new connection's state starting from "ready", so a still-idle connection can be
 * taken for a dead shim (README: Transport).
 */
export function chooseProtocol(transport: Transport): 'ttrpc' | 'grpc' {
  return transport === 'grpc' ? 'grpc' : 'ttrpc';
}

/** runtimeoptions.v1.Options.config_path from the Any on stdin. */
function configPathFromOptions(stdin: Buffer): string {
  return decodeRuntimeOptions(stdin)?.configPath ?? '';
}
