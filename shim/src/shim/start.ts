// `containerd-shim-stencil-v2 ... start`: find or spawn the pod's daemon and print its address.
// containerd reads stdout+stderr combined and waits for both pipes to close, so this prints
// nothing but the address. It runs for every container: when the pod's daemon is up (a CRI
// pod's app containers), it answers from what is recorded beside the daemon's socket and loads
// nothing more; only a new daemon needs the configuration (daemon-launch.ts).
import { groupId, isListening, readDaemonAddress, socketPath, writeAddressFile } from './address.js';
import type { ShimFlags } from './flags.js';

export async function start(flags: ShimFlags, bundle: string, stdin: Buffer): Promise<string> {
  const sock = socketPath(flags.address, flags.namespace, groupId(bundle, flags.id));
  // The address the daemon's first `start` gave out: it serves that protocol, whatever the
  // configuration says now.
  const running = readDaemonAddress(sock);
  if (running && (await isListening(sock))) {
    writeAddressFile(bundle, running);
    return running;
  }
  const { launchDaemon } = await import('./daemon-launch.js');
  const address = await launchDaemon(flags, bundle, sock, stdin);
  writeAddressFile(bundle, address);
  return address;
}
