// `stencil pod ...`: calls on a pod's shim daemon (its PodAdmin service, shim/admin-api.ts), found
// where containerd finds it: the socket named by containerd's address, the namespace and the pod.
import fs from 'node:fs';
import { podAdminService, POD_ADMIN_SERVICE, type MigratePodResponse } from '../shim/admin-api.js';
import { socketPath } from '../shim/address.js';
import { TtrpcClient } from '../ttrpc/client.js';
import { CliError } from './commands.js';

/** A migration moves the whole VM: minutes for a large or busy one over a capped link. */
const MIGRATE_TIMEOUT_MS = 30 * 60_000;

export async function migratePod(o: { pod: string; to: string; namespace: string; address: string }): Promise<MigratePodResponse> {
  const sock = socketPath(o.address, o.namespace, o.pod);
  if (!fs.existsSync(sock)) {
    throw new CliError(`no shim daemon for pod ${o.pod} in namespace ${o.namespace} of containerd ${o.address} (no socket ${sock})`);
  }
  const client = await TtrpcClient.connect(sock);
  try {
    const method = podAdminService().methods.Migrate;
    return await client.invoke<MigratePodResponse>(POD_ADMIN_SERVICE, 'Migrate', method.resolvedRequestType!, { to: o.to }, method.resolvedResponseType!, {
      timeoutMs: MIGRATE_TIMEOUT_MS,
    });
  } catch (err) {
    throw new CliError(`pod ${o.pod}: ${(err as Error).message}`);
  } finally {
    await client.close();
  }
}
