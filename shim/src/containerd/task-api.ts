// The containerd task API as TypeScript types (requests as handlers receive them: every field
// present; responses as they return them: omitted fields are encoded as zero; see rpc/service.ts
// for the conventions) and the ServiceDefinitions that
// serve one set of handlers as both containerd.task.v2.Task and containerd.task.v3.Task.
import type { AnyRpcHandler, CallContext, ServiceDefinition } from '../rpc/service.js';
import { serviceDefinition } from '../rpc/service.js';
import { type AnyMessage, service, type Timestamp, TASK_SERVICE_V2, TASK_SERVICE_V3 } from './protos.js';

/** containerd.v1.types.Status */
export enum TaskStatus {
  Unknown = 0,
  Created = 1,
  Running = 2,
  Stopped = 3,
  Paused = 4,
  Pausing = 5,
}

/** google.protobuf.Empty, as a handler returns it. */
export type Empty = Record<string, never>;

/** A Timestamp field as a handler may return it. */
export type TimestampValue = Timestamp | Date;

export interface Mount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface CreateTaskRequest {
  id: string;
  bundle: string;
  rootfs: Mount[];
  terminal: boolean;
  stdin: string;
  stdout: string;
  stderr: string;
  checkpoint: string;
  parentCheckpoint: string;
  options: AnyMessage | null;
}
export interface CreateTaskResponse {
  pid?: number;
}
/** Start, Delete, State, Wait: empty execId = the init process. */
export interface ProcessRequest {
  id: string;
  execId: string;
}
export type StartRequest = ProcessRequest;
export interface StartResponse {
  pid?: number;
}
export type DeleteRequest = ProcessRequest;
export interface DeleteResponse {
  pid?: number;
  exitStatus?: number;
  exitedAt?: TimestampValue;
}
export type StateRequest = ProcessRequest;
export interface StateResponse {
  id?: string;
  bundle?: string;
  pid?: number;
  status?: TaskStatus;
  stdin?: string;
  stdout?: string;
  stderr?: string;
  terminal?: boolean;
  exitStatus?: number;
  exitedAt?: TimestampValue;
  execId?: string;
}
export interface KillRequest {
  id: string;
  execId: string;
  signal: number;
  all: boolean;
}
export interface ExecProcessRequest {
  id: string;
  execId: string;
  terminal: boolean;
  stdin: string;
  stdout: string;
  stderr: string;
  /** JSON OCI Process (decodeJsonAny). */
  spec: AnyMessage | null;
}
export interface ResizePtyRequest {
  id: string;
  execId: string;
  width: number;
  height: number;
}
export interface CloseIORequest {
  id: string;
  execId: string;
  stdin: boolean;
}
/** Pids, Stats, Connect, Pause, Resume. */
export interface IdRequest {
  id: string;
}
export interface PidsResponse {
  processes?: Array<{ pid: number; info?: AnyMessage | null }>;
}
export interface CheckpointTaskRequest {
  id: string;
  path: string;
  options: AnyMessage | null;
}
export interface UpdateTaskRequest {
  id: string;
  /** JSON OCI LinuxResources (decodeJsonAny). */
  resources: AnyMessage | null;
  annotations: Record<string, string>;
}
export type WaitRequest = ProcessRequest;
export interface WaitResponse {
  exitStatus?: number;
  exitedAt?: TimestampValue;
}
export interface StatsResponse {
  /** e.g. packAny(CGROUPS_V2_METRICS_TYPE, metrics) */
  stats?: AnyMessage | null;
}
export interface ConnectResponse {
  shimPid?: number;
  taskPid?: number;
  version?: string;
}
export interface ShutdownRequest {
  id: string;
  now: boolean;
}

type H<Req, Res> = (request: Req, ctx: CallContext) => Promise<Res>;

/** One handler per Task RPC; methods returning google.protobuf.Empty may resolve to anything (ignored). */
export interface TaskHandlers {
  State: H<StateRequest, StateResponse>;
  Create: H<CreateTaskRequest, CreateTaskResponse>;
  Start: H<StartRequest, StartResponse>;
  Delete: H<DeleteRequest, DeleteResponse>;
  Pids: H<IdRequest, PidsResponse>;
  Pause: H<IdRequest, unknown>;
  Resume: H<IdRequest, unknown>;
  Checkpoint: H<CheckpointTaskRequest, unknown>;
  Kill: H<KillRequest, unknown>;
  Exec: H<ExecProcessRequest, unknown>;
  ResizePty: H<ResizePtyRequest, unknown>;
  CloseIO: H<CloseIORequest, unknown>;
  Update: H<UpdateTaskRequest, unknown>;
  Wait: H<WaitRequest, WaitResponse>;
  Stats: H<IdRequest, StatsResponse>;
  Connect: H<IdRequest, ConnectResponse>;
  Shutdown: H<ShutdownRequest, unknown>;
}

export const TASK_METHODS = [
  'State', 'Create', 'Start', 'Delete', 'Pids', 'Pause', 'Resume', 'Checkpoint', 'Kill',
  'Exec', 'ResizePty', 'CloseIO', 'Update', 'Wait', 'Stats', 'Connect', 'Shutdown',
] as const satisfies ReadonlyArray<keyof TaskHandlers>;

export type TaskMethod = (typeof TASK_METHODS)[number];

/** TaskHandlers under the camelCase method names of a service class (create, closeIO, ...). */
export type TaskHandlerObject = { [K in keyof TaskHandlers as Uncapitalize<K>]: TaskHandlers[K] };

/** The request type of a Task RPC, as handlers receive it. */
export type TaskRequest<M extends TaskMethod> = Parameters<TaskHandlers[M]>[0];

/**
 * The definitions of containerd.task.v2.Task and containerd.task.v3.Task, both calling the
 * same handlers. `handlers` names them like the RPCs (State, Create, ...) or in camelCase
 * (state, create, closeIO, resizePty, ...), e.g. an instance of a task service class; they are
 * called with `this` = handlers. Responses of Empty methods are ignored.
 */
export function taskServiceDefinitions(handlers: TaskHandlers | TaskHandlerObject): ServiceDefinition[] {
  const table: Record<string, AnyRpcHandler> = {};
  const source = handlers as unknown as Record<string, AnyRpcHandler>;
  for (const name of TASK_METHODS) {
    const camel = name[0].toLowerCase() + name.slice(1);
    const fn = typeof source[name] === 'function' ? source[name] : source[camel];
    if (typeof fn !== 'function') throw new Error(`task service: no handler for ${name} (nor ${camel})`);
    table[name] = (request, ctx) => fn.call(handlers, request, ctx);
  }
  return [TASK_SERVICE_V2, TASK_SERVICE_V3].map((name) => serviceDefinition(service(name), table));
}
