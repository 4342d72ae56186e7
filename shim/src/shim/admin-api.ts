// Stencil's PodAdmin service (proto/stencil/shim/v1/admin.proto): served by the shim daemon on its
// socket next to the task service, called by `stencil pod ...`.
import type protobuf from 'protobufjs';
import type { PodDowntimePhases } from '../pod/types.js';
import { loadProtoFiles } from '../util/proto.js';
import { type CallContext, type ServiceDefinition, serviceDefinition } from '../rpc/service.js';

export const POD_ADMIN_SERVICE = 'stencil.shim.v1.PodAdmin';

export interface MigratePodRequest {
  to: string;
}

export interface MigratePodResponse {
  pid: number;
  totalTimeMs: number;
  downtimeMs: number;
  transferredBytes: number;
  /** Null (as decoded) or absent when the VMM did not split the downtime. */
  downtimePhases?: PodDowntimePhases | null;
}

export interface PodStatusResponse {
  pid: number;
  vmState: string;
  monitor: string;
  containers: string[];
}

export interface PodAdminHandlers {
  migrate(req: MigratePodRequest, ctx: CallContext): Promise<MigratePodResponse>;
  status(): Promise<PodStatusResponse>;
}

let root: protobuf.Root | undefined;

export function podAdminService(): protobuf.Service {
  root ??= loadProtoFiles(['stencil/shim/v1/admin.proto']);
  return root.lookupService(POD_ADMIN_SERVICE);
}

export function podAdminDefinition(handlers: PodAdminHandlers): ServiceDefinition {
  return serviceDefinition(podAdminService(), {
    Migrate: (req, ctx) => handlers.migrate(req as MigratePodRequest, ctx),
    Status: () => handlers.status(),
  });
}
