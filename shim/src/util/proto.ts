// Loading Stencil's .proto files (proto/ at the repository or install root) with protobufjs.
// Imports inside them are written relative to proto/ (e.g. "containerd/types/mount.proto");
// google/protobuf/{any,empty,timestamp,...}.proto come from protobufjs' built-in copies.
// Also: google.protobuf.Timestamp conversions, shared by every protocol.
import path from 'node:path';
import protobuf from 'protobufjs';
import { repoRoot } from './paths.js';

export function protoDir(): string {
  return path.join(repoRoot(), 'proto');
}

/** Parses `files` (paths relative to proto/) and everything they import into one Root. */
export function loadProtoFiles(files: string[]): protobuf.Root {
  const dir = protoDir();
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string) => (path.isAbsolute(target) ? target : path.join(dir, target));
  try {
    root.loadSync(files.map((f) => path.join(dir, f)));
  } catch (err) {
    throw new Error(`cannot load ${files.join(', ')} from ${dir}: ${(err as Error).message}`, { cause: err });
  }
  camelCaseBuiltins(root);
  root.resolveAll();
  return root;
}

/**
 * Generates the encoders, decoders and converters of `types` and of every message type their
 * fields reach now, rather than at their first message (protobufjs builds them on first use): for
 * a daemon loaded ahead of its pod. Types only an Any carries are left for their first use.
 */
export function compileProtoTypes(types: protobuf.Type[]): void {
  const seen = new Set<protobuf.Type>();
  const pending = [...types];
  for (let t = pending.pop(); t; t = pending.pop()) {
    if (seen.has(t)) continue;
    seen.add(t);
    t.setup();
    for (const field of t.fieldsArray) {
      const type = field.resolve().resolvedType;
      if (type instanceof protobuf.Type) pending.push(type);
    }
  }
}

/**
 * protobufjs adds its built-in google/protobuf types with their proto field names (Any's
 * `type_url`), while fields parsed from our .proto files are camelCase (`exec_id` -> execId).
 * Renames the built-ins' fields so every plain object uses one convention (Any: {typeUrl, value}).
 */
function camelCaseBuiltins(root: protobuf.Root): void {
  const ns = root.lookup('google.protobuf');
  if (!(ns instanceof protobuf.Namespace)) return;
  for (const type of ns.nestedArray) {
    if (!(type instanceof protobuf.Type)) continue;
    for (const field of [...type.fieldsArray]) {
      if (!field.name.includes('_')) continue;
      const camel = field.name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
      type.remove(field);
      type.add(new protobuf.Field(camel, field.id, field.type, field.rule, field.extend, field.options));
    }
  }
}

// ---- google.protobuf.Timestamp ----

/** google.protobuf.Timestamp as a plain object (seconds since the epoch, 0 <= nanos < 1e9). */
export interface Timestamp {
  seconds: number;
  nanos: number;
}

export function timestampFromDate(date: Date): Timestamp {
  const ms = date.getTime();
  if (Number.isNaN(ms)) throw new RangeError('cannot convert an invalid Date to a Timestamp');
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1e6 };
}

export function timestampToDate(ts: Timestamp): Date {
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}

/** From nanoseconds since the epoch (e.g. a guest clock reading). */
export function timestampFromNs(ns: bigint): Timestamp {
  let seconds = ns / 1_000_000_000n;
  let nanos = ns % 1_000_000_000n;
  if (nanos < 0n) {
    nanos += 1_000_000_000n;
    seconds -= 1n;
  }
  return { seconds: Number(seconds), nanos: Number(nanos) };
}

export function timestampToNs(ts: Timestamp): bigint {
  return BigInt(ts.seconds) * 1_000_000_000n + BigInt(ts.nanos);
}

/** The current time with sub-millisecond resolution. */
export function timestampNow(): Timestamp {
  const ns = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  return timestampFromNs(ns);
}

/**
 * A copy of `value` that protobufjs' fromObject accepts: every Date becomes a Timestamp object
 * (fromObject would silently encode a Date as the epoch). Buffers and typed arrays are kept.
 */
export function prepareForEncoding(value: unknown): unknown {
  if (value instanceof Date) return timestampFromDate(value);
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return value;
  if (Array.isArray(value)) return value.map(prepareForEncoding);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) out[key] = prepareForEncoding(v);
  return out;
}

