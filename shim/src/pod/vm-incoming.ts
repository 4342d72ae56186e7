// The destination side of a pod migration: a pod VM that arrives by live migration (tcp:/unix:)
// instead of being booted or cloned. The VM is built when its last state is in, and the source is
// told (complete) only once it runs here, so a failure anywhere before leaves the source running.
import { MicroVm } from '../hypervisor/microvm.js';
import { loadAddon, type NativeIncomingOptions, type NativeMigrationIncoming } from '../hypervisor/native.js';
import { parseMigrationUri } from '../qmp/vm-commands.js';
import { memoryFileName } from '../hypervisor/types.js';

export interface IncomingVmOptions {
  /** The VM's name (its RAM file is <memoryDir>/<name>.ram). */
  name: string;
  /** tcp:HOST:PORT or unix:PATH. */
  uri: string;
  memoryDir: string;
  /** This host's wiring of the arriving VM: its vsock CID and socket, its shares. */
  restore: NonNullable<NativeIncomingOptions['restore']>;
  /** Called once the endpoint listens: the source may send from then on. */
  onListening(): void;
}

export interface ArrivedVm {
  vm: MicroVm;
  /** After vm.start(): the source lets its paused VM go. */
  complete(): void;
  /** The VM could not be started here: the source resumes its own. */
  fail(reason: string): void;
}

/** Listens at `uri` and resolves with the migrated VM, built and not started. */
export function receiveVm(o: IncomingVmOptions): Promise<ArrivedVm> {
  const uri = parseMigrationUri(o.uri);
  if (uri.kind !== 'unix' && uri.kind !== 'tcp') throw new Error(`a pod VM arrives over tcp: or unix:, not ${o.uri}`);
  const { NativeMigrationIncoming } = loadAddon();
  return new Promise((resolve, reject) => {
    let incoming: NativeMigrationIncoming | undefined;
    let arrived = false;
    const onEvent = (event: string) => {
      if (event === 'received') {
        try {
          const vm = MicroVm.fromIncoming(o.name, incoming!);
          arrived = true;
          resolve({ vm, complete: () => incoming!.complete(), fail: (reason) => incoming!.fail(reason) });
        } catch (err) {
          incoming!.fail(`building the VM: ${(err as Error).message}`);
          reject(new Error(`the migrated VM could not be built: ${(err as Error).message}`, { cause: err }));
        }
      } else if (event === 'finished') {
        const stats = incoming!.stats();
        incoming!.close();
        if (!arrived) reject(new Error(`the incoming migration at ${o.uri} ${stats.status}: ${stats.error || 'no VM arrived'}`));
      }
    };
    incoming = new NativeMigrationIncoming(o.uri, { memoryDir: o.memoryDir, memoryName: memoryFileName(o.name), restore: o.restore }, onEvent);
    incoming.start();
    o.onListening();
  });
}
