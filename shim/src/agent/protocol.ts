// proto/agent.proto loaded with protobufjs (once), and the few helpers that turn its messages
// into frames and back.
import path from 'node:path';
import type protobuf from 'protobufjs';
import { loadProtoFiles, protoDir } from '../util/proto.js';

export const PROTOCOL_VERSION = 1;
export const PACKAGE = 'stencil.agent.v1';

export enum Role {
  Control = 1,
  Stdin = 2,
  Stdout = 3,
  Stderr = 4,
  /** A TCP connection to a port on the guest's 127.0.0.1 (port forwarding). */
  Port = 5,
}

export interface AgentTypes {
  root: protobuf.Root;
  Hello: protobuf.Type;
  HelloReply: protobuf.Type;
  Request: protobuf.Type;
  Response: protobuf.Type;
}

let loaded: AgentTypes | undefined;

export function protoPath(): string {
  return path.join(protoDir(), 'agent.proto');
}

export function agentTypes(): AgentTypes {
  if (!loaded) {
    const root = loadProtoFiles(['agent.proto']);
    const t = (name: string) => root.lookupType(`${PACKAGE}.${name}`);
    loaded = { root, Hello: t('Hello'), HelloReply: t('HelloReply'), Request: t('Request'), Response: t('Response') };
  }
  return loaded;
}

/** Decoding options: 64-bit integers as decimal strings (converted by the caller), enums as names. */
export const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, defaults: true };

export function encodeMessage(type: protobuf.Type, value: Record<string, unknown>): Uint8Array {
  return type.encode(type.fromObject(value)).finish();
}

export function decodeMessage<T>(type: protobuf.Type, payload: Uint8Array): T {
  return type.toObject(type.decode(payload), TO_OBJECT) as T;
}

/** The agent's Error message as decoded. */
export interface WireError {
  code: string;
  message: string;
}

/** "ERROR_CODE_NOT_FOUND" -> "NOT_FOUND". */
export function errorCodeName(code: string | number): string {
  return typeof code === 'string' ? code.replace(/^ERROR_CODE_/, '') : `CODE_${code}`;
}
