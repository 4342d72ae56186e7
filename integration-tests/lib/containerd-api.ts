// Calls to containerd's own gRPC API for what ctr cannot do (ctr has no `task update`).
import * as grpc from '@grpc/grpc-js';
import { encodeJsonAny, OCI_LINUX_RESOURCES_TYPE_URL } from '../../shim/src/containerd/protos.js';
import { loadProtoFiles } from '../../shim/src/util/proto.js';
import type { ContainerdInstance } from './containerd.js';

const UPDATE = '/containerd.services.tasks.v1.Tasks/Update';

/** containerd's Tasks.Update: sets the running task's OCI `linux.resources`, through its shim. */
export async function updateTaskResources(c: ContainerdInstance, containerId: string, resources: object): Promise<void> {
  const root = loadProtoFiles(['containerd/services/tasks/v1/tasks.proto']);
  const request = root.lookupType('containerd.services.tasks.v1.UpdateTaskRequest');
  const body = Buffer.from(
    request.encode(request.fromObject({ containerId, resources: encodeJsonAny(OCI_LINUX_RESOURCES_TYPE_URL, resources) })).finish(),
  );
  const client = new grpc.Client(`unix://${c.address}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('containerd-namespace', c.namespace);
  try {
    await new Promise<void>((resolve, reject) => {
      client.makeUnaryRequest(
        UPDATE,
        (b: Buffer) => b,
        (b: Buffer) => b,
        body,
        metadata,
        { deadline: Date.now() + 120_000 },
        (err) => (err ? reject(new Error(`containerd ${UPDATE} of ${containerId}: ${err.message}`, { cause: err })) : resolve()),
      );
    });
  } finally {
    client.close();
  }
}
