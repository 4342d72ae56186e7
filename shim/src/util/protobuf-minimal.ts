// protobufjs' one-file minimal build (Reader/Writer only, no .proto parsing), for the shim's
// short-lived subcommands (`start`, `delete`) that run on containerd's critical path: the modular
// build is ~18 files to load and containerd's .proto files take longer still to parse.
import { createRequire } from 'node:module';

type MinimalProtobuf = typeof import('protobufjs/minimal.js');

let loaded: MinimalProtobuf | undefined;

export function minimalProtobuf(): MinimalProtobuf {
  loaded ??= createRequire(import.meta.url)('protobufjs/dist/minimal/protobuf.min.js') as MinimalProtobuf;
  return loaded;
}
