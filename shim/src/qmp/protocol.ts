// The QEMU Machine Protocol's wire shapes (QMP, docs/interop/qmp-spec in QEMU): JSON objects in
// both directions, a greeting from the server, `{"execute", "arguments"?, "id"?}` requests,
// `{"return"}` / `{"error": {"class", "desc"}}` replies echoing the id, and asynchronous events.
// Stencil serves a subset of QEMU's commands with QEMU's argument names and error classes, so
// existing QMP clients (scripts, socat sessions, libvirt-style tooling) drive Stencil VMs as is.

/** QEMU's error classes (qapi/error.json); clients branch on these, not on the text. */
export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap';

export class QmpError extends Error {
  constructor(
    readonly errorClass: QmpErrorClass,
    message: string,
  ) {
    super(message);
    this.name = 'QmpError';
  }
}

/** The version a client sees in the greeting: the QEMU release whose QMP behaviour is followed. */
export const EMULATED_QEMU_VERSION = { major: 7, minor: 2, micro: 0 };

export function greeting(packageName: string): object {
  return { QMP: { version: { qemu: EMULATED_QEMU_VERSION, package: packageName }, capabilities: [] } };
}

export function eventMessage(event: string, data?: object, now = Date.now()): object {
  const timestamp = { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 };
  return data === undefined ? { event, timestamp } : { event, data, timestamp };
}

export function errorReply(err: QmpError, id: unknown): object {
  const reply: Record<string, unknown> = { error: { class: err.errorClass, desc: err.message } };
  if (id !== undefined) reply.id = id;
  return reply;
}

export function returnReply(value: unknown, id: unknown): object {
  const reply: Record<string, unknown> = { return: value ?? {} };
  if (id !== undefined) reply.id = id;
  return reply;
}

export interface QmpRequest {
  execute: string;
  arguments: Record<string, unknown>;
  id: unknown;
}

/** Checks a parsed JSON value is a request, with QEMU's messages for what is wrong. */
export function parseRequest(value: unknown): QmpRequest {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new QmpError('GenericError', 'QMP input must be a JSON object');
  }
  const input = value as Record<string, unknown>;
  for (const key of Object.keys(input)) {
    if (key !== 'execute' && key !== 'arguments' && key !== 'id') {
      throw new QmpError('GenericError', `QMP input member '${key}' is unexpected`);
    }
  }
  if (!('execute' in input)) throw new QmpError('GenericError', "QMP input lacks member 'execute'");
  if (typeof input.execute !== 'string') throw new QmpError('GenericError', "QMP input member 'execute' must be a string");
  const args = input.arguments ?? {};
  if (typeof args !== 'object' || args === null || Array.isArray(args)) {
    throw new QmpError('GenericError', "QMP input member 'arguments' must be an object");
  }
  return { execute: input.execute, arguments: args as Record<string, unknown>, id: input.id };
}

export type ArgType = 'string' | 'boolean' | 'integer' | 'array' | 'object';

export interface ArgSpec {
  type: ArgType;
  optional?: boolean;
}

function hasType(value: unknown, type: ArgType): boolean {
  switch (type) {
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
    case 'integer':
      return Number.isSafeInteger(value);
    case 'array':
      return Array.isArray(value);
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value);
  }
}

/** Validates arguments against a command's schema: missing, unexpected and mistyped members. */
export function checkArguments(args: Record<string, unknown>, schema: Record<string, ArgSpec>): void {
  for (const key of Object.keys(args)) {
    if (!(key in schema)) throw new QmpError('GenericError', `Parameter '${key}' is unexpected`);
  }
  for (const [name, spec] of Object.entries(schema)) {
    if (!(name in args)) {
      if (!spec.optional) throw new QmpError('GenericError', `Parameter '${name}' is missing`);
      continue;
    }
    if (!hasType(args[name], spec.type)) {
      throw new QmpError('GenericError', `Invalid parameter type for '${name}', expected: ${spec.type}`);
    }
  }
}
