// The destination side of a pod migration: a pod VM that arrives by live migration (tcp:/unix:)
// instead of being booted or cloned. The VM is built while its RAM streams in, started the moment
// its last state is in, and only then is the source told (complete), so a failure anywhere before
// leaves the source running.
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
  /**
   * Starts the arrived VM (vm.start() loads its final state), synchronously as the state comes
   * in: all of it is downtime. A throw fails the migration and the source runs on.
   */
  start(vm: MicroVm): void;
}

/** Listens at `uri` and resolves with the migrated VM once it runs here and the source knows. */
export function receiveVm(o: IncomingVmOptions): Promise<MicroVm> {
  const uri = parseMigrationUri(o.uri);
  if (uri.kind !== 'unix' && uri.kind !== 'tcp') throw new Error(`a pod VM arrives over tcp: or unix:, not ${o.uri}`);
  const { NativeMigrationIncoming } = loadAddon();
  return new Promise((resolve, reject) => {
    let incoming: NativeMigrationIncoming | undefined;
    let arriving: MicroVm | undefined;  // built while its RAM streams in
    let arrived = false;
    const onEvent = (event: string) => {
      if (event === 'accepted') {
        try {
          arriving = MicroVm.fromIncoming(o.name, incoming!);
        } catch (err) {
          incoming!.fail(`building the VM: ${(err as Error).message}`);
          reject(new Error(`the migrated VM could not be built: ${(err as Error).message}`, { cause: err }));
        }
      } else if (event === 'received' && arriving) {
        try {
          o.start(arriving);
        } catch (err) {
          incoming!.fail(`starting the VM: ${(err as Error).message}`);
          return; // 'finished' follows: the VM goes and the promise rejects there
        }
        incoming!.complete();
        arrived = true;
        resolve(arriving);
      } else if (event === 'finished') {
        const stats = incoming!.stats();
        incoming!.close();
        if (!arrived) {
          void arriving?.destroy();
          reject(new Error(`the incoming migration at ${o.uri} ${stats.status}: ${stats.error || 'no VM arrived'}`));
        }
      }
    };
    incoming = new NativeMigrationIncoming(o.uri, { memoryDir: o.memoryDir, memoryName: memoryFileName(o.name), restore: o.restore }, onEvent);
    incoming.start();
    o.onListening();
  });
}
