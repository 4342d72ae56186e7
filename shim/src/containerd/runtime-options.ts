// runtimeoptions.v1.Options (proto/containerd/runtimeoptions/v1/options.proto), the runtime
// options containerd passes to `start` on stdin, packed in a google.protobuf.Any. Decoded with
// protobufjs' Reader alone: `start` runs for every container and loading containerd's .proto
// files would cost it more than everything else it does.
import { minimalProtobuf } from '../util/protobuf-minimal.js';
import { type AnyMessage, anyTypeName } from './any.js';

export const RUNTIME_OPTIONS_TYPE = 'runtimeoptions.v1.Options';

export interface RuntimeOptions {
  typeUrl: string;
  configPath: string;
  configBody: Buffer;
}

/**
 * The runtimeoptions.v1.Options in the runtime options containerd passes: either the raw
 * protobuf Any read from the `start` subcommand's stdin, or CreateTaskRequest.options as decoded.
 * undefined when there are none (empty stdin, null) or they are of another type (e.g. runc's);
 * an error naming the problem when the bytes do not decode.
 */
export function decodeRuntimeOptions(options: Uint8Array | AnyMessage | null | undefined): RuntimeOptions | undefined {
  if (!options) return undefined;
  let any: AnyMessage;
  if (ArrayBuffer.isView(options)) {
    if (options.length === 0) return undefined;
    try {
      const f = lengthDelimitedFields(options, 2);
      any = { typeUrl: utf8(f[1]), value: f[2] ?? new Uint8Array() };
    } catch (err) {
      throw new Error(`runtime options: not a protobuf Any (${options.length} bytes): ${(err as Error).message}`, { cause: err });
    }
  } else {
    any = options;
  }
  if (anyTypeName(any.typeUrl) !== RUNTIME_OPTIONS_TYPE) return undefined;
  try {
    const f = lengthDelimitedFields(any.value ?? new Uint8Array(), 3);
    return { typeUrl: utf8(f[1]), configPath: utf8(f[2]), configBody: Buffer.from(f[3] ?? []) };
  } catch (err) {
    throw new Error(`runtime options: undecodable ${RUNTIME_OPTIONS_TYPE}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The string/bytes fields 1..maxField of a message whose known fields are all length-delimited
 * (the last occurrence wins, as in protobuf); other fields are skipped, a known one of another
 * wire type is an error.
 */
function lengthDelimitedFields(bytes: Uint8Array, maxField: number): Record<number, Uint8Array> {
  const reader = minimalProtobuf().Reader.create(bytes);
  const fields: Record<number, Uint8Array> = {};
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === 0) throw new Error(`invalid field number 0 at offset ${reader.pos}`);
    if (field <= maxField) {
      if (wireType !== 2) throw new Error(`field ${field} has wire type ${wireType}, not 2 (length-delimited)`);
      fields[field] = reader.bytes();
    } else {
      reader.skipType(wireType);
    }
  }
  return fields;
}

function utf8(bytes: Uint8Array | undefined): string {
  return bytes ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8') : '';
}
