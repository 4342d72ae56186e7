// The ttrpc envelope messages (proto/ttrpc.proto: Request, Response with google.rpc.Status),
// loaded once, and their conversions.
import type protobuf from 'protobufjs';
import { loadProtoFiles } from '../util/proto.js';

export interface TtrpcRequest {
  service: string;
  method: string;
  payload: Buffer;
  /** Relative deadline in ns; 0 = none. */
  timeoutNano: number;
  metadata: Array<{ key: string; value: string }>;
}

export interface TtrpcStatus {
  code: number;
  message: string;
}

export interface TtrpcResponse {
  status: TtrpcStatus | null;
  payload: Buffer;
}

let types: { Request: protobuf.Type; Response: protobuf.Type } | undefined;

function envelopeTypes(): { Request: protobuf.Type; Response: protobuf.Type } {
  if (!types) {
    const root = loadProtoFiles(['ttrpc.proto']);
    types = { Request: root.lookupType('ttrpc.Request'), Response: root.lookupType('ttrpc.Response') };
  }
  return types;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, defaults: true, arrays: true };

export function encodeRequest(request: Omit<TtrpcRequest, 'metadata'> & { metadata?: TtrpcRequest['metadata'] }): Uint8Array {
  const { Request } = envelopeTypes();
  return Request.encode(Request.fromObject(request)).finish();
}

export function decodeRequest(data: Uint8Array): TtrpcRequest {
  const { Request } = envelopeTypes();
  return Request.toObject(Request.decode(data), TO_OBJECT) as TtrpcRequest;
}

/** A response carrying `payload` (status OK, sent as an empty Status like Go's ttrpc does). */
export function encodeOkResponse(payload: Uint8Array): Uint8Array {
  const { Response } = envelopeTypes();
  return Response.encode(Response.fromObject({ status: {}, payload })).finish();
}

export function encodeErrorResponse(code: number, message: string): Uint8Array {
  const { Response } = envelopeTypes();
  return Response.encode(Response.fromObject({ status: { code, message } })).finish();
}

export function decodeResponse(data: Uint8Array): TtrpcResponse {
  const { Response } = envelopeTypes();
  return Response.toObject(Response.decode(data), TO_OBJECT) as TtrpcResponse;
}

/** Metadata pairs -> record (last value of a repeated key wins). */
export function metadataRecord(pairs: Array<{ key: string; value: string }>): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (const { key, value } of pairs) out[key] = value;
  return out;
}

export function metadataPairs(record: Record<string, string> | undefined): Array<{ key: string; value: string }> {
  return Object.entries(record ?? {}).map(([key, value]) => ({ key, value }));
}
