// Transport-neutral RPC services: a ServiceDefinition (protobufjs request/response types plus
// an async handler per method) is served unchanged by the ttrpc server (ttrpc/server.ts) and
// the gRPC server (rpc/grpc-server.ts); both decode, call and encode through invokeMethod.
//
// Handlers see requests as plain objects made by protobufjs' toObject with DECODE_OPTIONS:
// camelCase field names (exec_id -> execId), 64-bit integers as JS numbers, enums as numbers,
// bytes as Buffers, every scalar present with its default ("" / 0 / false / []), and absent
// sub-messages as null. They return plain objects in the same shape (anything
// protobufjs' fromObject accepts: 64-bit fields may also be bigint or decimal strings, enums
// numbers or names), where a Timestamp field may also be a Date; undefined means an empty
// response (google.protobuf.Empty).
import type protobuf from 'protobufjs';
import { Code, RpcError, toRpcError } from './errors.js';
import { prepareForEncoding } from '../util/proto.js';

export interface CallContext {
  /** Fully qualified service name as called, e.g. "containerd.task.v3.Task". */
  service: string;
  method: string;
  /** Call metadata (ttrpc KeyValues / gRPC headers); for a repeated key the last value wins. */
  metadata: Record<string, string>;
  /** Aborted when the caller's deadline passes, the call is cancelled or its connection closes. */
  signal: AbortSignal;
}

/** A request as decoded with DECODE_OPTIONS; typed services declare its exact shape (containerd/task-api.ts). */
export type DecodedMessage = Record<string, unknown>;

/** A method's handler; `Req` is the shape the method's protobuf request type decodes to. */
export type RpcHandler<Req = DecodedMessage, Res = unknown> = (request: Req, ctx: CallContext) => Promise<Res>;

/** A handler of any request type: a definition pairs it with the protobuf type that decodes to it. */
export type AnyRpcHandler = RpcHandler<never>;

export interface MethodDefinition {
  requestType: protobuf.Type;
  responseType: protobuf.Type;
  handler: AnyRpcHandler;
}

export interface ServiceDefinition {
  /** Fully qualified name without a leading dot, e.g. "containerd.task.v2.Task". */
  name: string;
  methods: Record<string, MethodDefinition>;
}

export const DECODE_OPTIONS: protobuf.IConversionOptions = {
  longs: Number,
  enums: Number,
  defaults: true,
  arrays: true,
  objects: true,
};

/** Metadata key under which containerd sends the namespace over ttrpc, and over gRPC. */
export const NAMESPACE_KEY_TTRPC = 'containerd-namespace-ttrpc';
export const NAMESPACE_KEY_GRPC = 'containerd-namespace';

/** The containerd namespace a call carries (ttrpc or gRPC key), if any. */
export function namespaceOf(metadata: Record<string, string>): string | undefined {
  return metadata[NAMESPACE_KEY_TTRPC] || metadata[NAMESPACE_KEY_GRPC] || undefined;
}

/**
 * A ServiceDefinition for a protobufjs Service (looked up in a loaded Root): one handler per
 * method, keyed by the method's name (a plain object or a class instance; handlers are called
 * with `this` = handlers). A missing handler is an error naming it.
 */
export function serviceDefinition(service: protobuf.Service, handlers: Record<string, AnyRpcHandler>): ServiceDefinition {
  service.resolveAll();
  const name = service.fullName.replace(/^\./, '');
  const methods: Record<string, MethodDefinition> = {};
  for (const method of service.methodsArray) {
    const handler = handlers[method.name];
    if (typeof handler !== 'function') throw new Error(`service ${name}: no handler for method ${method.name}`);
    if (method.requestStream || method.responseStream) {
      throw new Error(`service ${name}: method ${method.name} is streaming, which is not supported`);
    }
    methods[method.name] = {
      requestType: method.resolvedRequestType!,
      responseType: method.resolvedResponseType!,
      handler: handler.bind(handlers),
    };
  }
  return { name, methods };
}

export function decodeRequest(method: MethodDefinition, payload: Uint8Array): DecodedMessage {
  const type = method.requestType;
  return type.toObject(type.decode(payload), DECODE_OPTIONS);
}

export function encodeResponse(method: MethodDefinition, response: unknown): Uint8Array {
  const type = method.responseType;
  if (type.fieldsArray.length === 0) return new Uint8Array(); // google.protobuf.Empty: the result is ignored
  return type.encode(type.fromObject(prepareForEncoding(response ?? {}) as Record<string, unknown>)).finish();
}

/**
 * Decodes `payload`, runs the method's handler and encodes its answer. Throws RpcError:
 * UNIMPLEMENTED for an unknown method, INTERNAL when the payload does not decode or the answer
 * does not encode, and the handler's error mapped by toRpcError.
 */
export async function invokeMethod(
  service: ServiceDefinition,
  methodName: string,
  payload: Uint8Array,
  ctx: CallContext,
): Promise<Uint8Array> {
  const method = Object.hasOwn(service.methods, methodName) ? service.methods[methodName] : undefined;
  if (!method) throw new RpcError(Code.Unimplemented, `method ${methodName}`);
  let request: DecodedMessage;
  try {
    request = decodeRequest(method, payload);
  } catch (err) {
    throw new RpcError(Code.Internal, `${service.name}/${methodName}: cannot decode ${method.requestType.name}: ${(err as Error).message}`);
  }
  let response: unknown;
  try {
    // The handler was declared for what its request type decodes to (see serviceDefinition).
    response = await method.handler(request as never, ctx);
  } catch (err) {
    throw toRpcError(err);
  }
  try {
    return encodeResponse(method, response);
  } catch (err) {
    throw new RpcError(Code.Internal, `${service.name}/${methodName}: cannot encode ${method.responseType.name}: ${(err as Error).message}`);
  }
}
