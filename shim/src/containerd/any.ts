// google.protobuf.Any as the shim handles it, without protobufjs (runtime-options.ts needs it in
// `start`, which loads no .proto files); protos.ts packs and unpacks Anys.

/** google.protobuf.Any as a plain object. */
export interface AnyMessage {
  typeUrl: string;
  value: Uint8Array;
}

/** The message name of a type URL: everything after the last "/" (prefixes are optional). */
export function anyTypeName(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
}
