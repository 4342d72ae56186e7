// `stencil pod ...`: calls on a pod's shim daemon (its PodAdmin service, shim/admin-api.ts), found
// where containerd finds it: the socket named by containerd's address, the namespace and the pod.
import fs from 'node:fs';
import { podAdminService, POD_ADMIN_SERVICE, type MigratePodResponse, type PodStatusResponse } from '../shim/admin-api.js';
import { socketPath } from '../shim/address.js';
import { TtrpcClient } from '../ttrpc/client.js';
import { CliError } from './commands.js';

/** A pod as containerd knows it: `stencil pod` finds its daemon's socket from these. */
interface PodAddress {
  pod: string;
  namespace: string;
  address: string;
}

/** A migration moves the whole VM: minutes for a large or busy one over a capped link. */
const MIGRATE_TIMEOUT_MS = 30 * 60_000;

/** One PodAdmin call on the pod's shim daemon; its errors name the pod. */
async function callPodAdmin<T>(o: PodAddress, method: 'Migrate' | 'Status', request: object, timeoutMs?: number): Promise<T> {
  const sock = socketPath(o.address, o.namespace, o.pod);
  if (!fs.existsSync(sock)) {
    throw new CliError(`no shim daemon for pod ${o.pod} in namespace ${o.namespace} of containerd ${o.address} (no socket ${sock})`);
  }
  const client = await TtrpcClient.connect(sock);
  try {
    const m = podAdminService().methods[method];
    return await client.invoke<T>(POD_ADMIN_SERVICE, method, m.resolvedRequestType!, request, m.resolvedResponseType!, timeoutMs ? { timeoutMs } : {});
  } catch (err) {
    throw new CliError(`pod ${o.pod}: ${(err as Error).message}`);
  } finally {
    await client.close();
  }
}

export function migratePod(o: PodAddress & { to: string }): Promise<MigratePodResponse> {
  return callPodAdmin<MigratePodResponse>(o, 'Migrate', { to: o.to }, MIGRATE_TIMEOUT_MS);
}

export async function podStatus(o: PodAddress): Promise<PodStatusResponse> {
  const r = await callPodAdmin<Partial<PodStatusResponse>>(o, 'Status', {});
  // protobuf leaves out fields at their defaults
  return { pid: r.pid ?? 0, vmState: r.vmState ?? '', monitor: r.monitor ?? '', containers: r.containers ?? [] };
}
