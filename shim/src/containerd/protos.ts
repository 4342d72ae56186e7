// containerd's protocol messages (proto/containerd/**: task service v2/v3, events, events
// service, runtime options, cgroup v2 metrics), loaded once with protobufjs, and helpers for
// the values that need care: Any (bare type URLs for protobuf payloads, JSON payloads for OCI
// specs), Timestamp, and plain objects with Dates in them.
import protobuf from 'protobufjs';
import { Code, RpcError } from '../rpc/errors.js';
import { DECODE_OPTIONS } from '../rpc/service.js';
import { loadProtoFiles, prepareForEncoding } from '../util/proto.js';
import { type AnyMessage, anyTypeName } from './any.js';

export { type AnyMessage, anyTypeName } from './any.js';

export const TASK_SERVICE_V2 = 'containerd.task.v2.Task';
export const TASK_SERVICE_V3 = 'containerd.task.v3.Task';
export const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';
export const EVENTS_PACKAGE = 'containerd.events';
export const CGROUPS_V2_METRICS_TYPE = 'io.containerd.cgroups.v2.Metrics';
/** Type URLs of the JSON payloads in ExecProcessRequest.spec and UpdateTaskRequest.resources. */
export const OCI_PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
export const OCI_LINUX_RESOURCES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';

const FILES = [
  'containerd/task/v2/shim.proto',
  'containerd/task/v3/shim.proto',
  'containerd/events/task.proto',
  'containerd/services/events/ttrpc/v1/events.proto',
  'containerd/runtimeoptions/v1/options.proto',
  'containerd/cgroups/v2/metrics.proto',
];

let root: protobuf.Root | undefined;

export function containerdProtos(): protobuf.Root {
  root ??= loadProtoFiles(FILES);
  return root;
}

/** The message types of the task service's calls and of the task events (what a pod's first calls use). */
export function taskCallTypes(): protobuf.Type[] {
  const calls = service(TASK_SERVICE_V2).methodsArray.flatMap((m) => {
    m.resolve();
    return [m.resolvedRequestType, m.resolvedResponseType].filter((t): t is protobuf.Type => t !== null);
  });
  const events = containerdProtos().lookup('containerd.events');
  return [...calls, ...(events instanceof protobuf.Namespace ? events.nestedArray.filter((t): t is protobuf.Type => t instanceof protobuf.Type) : [])];
}

/** A message type by its full name, e.g. "containerd.events.TaskExit". */
export function messageType(fullName: string): protobuf.Type {
  const found = containerdProtos().lookup(fullName.replace(/^\./, ''));
  if (!(found instanceof protobuf.Type)) {
    throw new Error(`unknown protobuf message type ${JSON.stringify(fullName)} (not in proto/containerd)`);
  }
  return found as protobuf.Type;
}

export function service(fullName: string): protobuf.Service {
  try {
    return containerdProtos().lookupService(fullName);
  } catch {
    throw new Error(`unknown protobuf service ${JSON.stringify(fullName)} (not in proto/containerd)`);
  }
}


/** Encodes a plain object (Dates allowed for Timestamp fields) as `typeName`. */
export function encodeMessage(typeName: string, message: object): Uint8Array {
  const type = messageType(typeName);
  return type.encode(type.fromObject(prepareForEncoding(message) as Record<string, unknown>)).finish();
}

export function decodeMessage<T = Record<string, unknown>>(typeName: string, bytes: Uint8Array): T {
  const type = messageType(typeName);
  return type.toObject(type.decode(bytes), DECODE_OPTIONS) as T;
}

// Timestamp helpers live with the shared loader (rpc/service.ts needs them too).
export {
  prepareForEncoding,
  type Timestamp,
  timestampFromDate,
  timestampFromNs,
  timestampNow,
  timestampToDate,
  timestampToNs,
} from '../util/proto.js';

// ---- Any ----

export function encodeAny(typeUrl: string, value: Uint8Array): AnyMessage {
  return { typeUrl, value };
}

/** A protobuf message packed in an Any with its bare type URL (how containerd expects events, metrics). */
export function packAny(typeName: string, message: object): AnyMessage {
  return { typeUrl: typeName.replace(/^\./, ''), value: encodeMessage(typeName, message) };
}

/** Decodes a protobuf Any whose type is in proto/containerd; `expected` (a type name) is checked if given. */
export function unpackAny<T = Record<string, unknown>>(any: AnyMessage, expected?: string): T {
  const name = anyTypeName(any.typeUrl);
  if (expected && name !== expected) throw new Error(`expected an Any of type ${expected}, got ${JSON.stringify(any.typeUrl)}`);
  return decodeMessage<T>(name, any.value);
}

/**
 * The JSON object inside an Any (ExecProcessRequest.spec, UpdateTaskRequest.resources).
 * Throws RpcError INVALID_ARGUMENT naming `what` when it is missing or not a JSON object.
 */
export function decodeJsonAny<T = Record<string, unknown>>(any: AnyMessage | null | undefined, what: string): T {
  if (!any || !any.value || any.value.length === 0) throw new RpcError(Code.InvalidArgument, `${what} is missing`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(any.value).toString('utf8'));
  } catch (err) {
    throw new RpcError(Code.InvalidArgument, `${what} (${any.typeUrl || 'no type URL'}) is not valid JSON: ${(err as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new RpcError(Code.InvalidArgument, `${what} (${any.typeUrl || 'no type URL'}) is not a JSON object`);
  }
  return parsed as T;
}

/** A JSON payload packed in an Any (the way containerd's clients send OCI specs). */
export function encodeJsonAny(typeUrl: string, value: unknown): AnyMessage {
  return { typeUrl, value: Buffer.from(JSON.stringify(value), 'utf8') };
}

