// RPC errors shared by the ttrpc and gRPC transports: gRPC status codes (which ttrpc reuses in
// google.rpc.Status) and RpcError, the error a service handler throws to choose the code
// containerd sees. A layer's typed error (common/src/errors.ts) keeps its code; any other error
// a handler throws reaches the caller as UNKNOWN.
import { type ErrorCode, isCodedError } from '../../../common/src/errors.js';

/** gRPC status codes (google.rpc.Code), named like Go's codes package. */
export const Code = {
  OK: 0,
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;

export type CodeName = keyof typeof Code;
export type StatusCode = (typeof Code)[CodeName];

const NAMES = new Map<number, string>(Object.entries(Code).map(([name, code]) => [code, name]));

/** "NotFound" for 5; "Code(42)" for a number outside the table. */
export function codeName(code: number): string {
  return NAMES.get(code) ?? `Code(${code})`;
}

/** An RPC failure with a status code; the message is sent to the caller as the status message. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'RpcError';
  }

  get codeName(): string {
    return codeName(this.code);
  }

  override toString(): string {
    return `${this.name} ${this.codeName}: ${this.message}`;
  }
}

/** The connection a call was using closed (or could not be opened) before the answer came. */
export class RpcClosedError extends RpcError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.Unavailable, message, options);
    this.name = 'RpcClosedError';
  }
}

const BY_ERROR_CODE: Record<ErrorCode, StatusCode> = {
  INVALID_ARGUMENT: Code.InvalidArgument,
  NOT_FOUND: Code.NotFound,
  ALREADY_EXISTS: Code.AlreadyExists,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  RESOURCE_EXHAUSTED: Code.ResourceExhausted,
  UNIMPLEMENTED: Code.Unimplemented,
  UNAVAILABLE: Code.Unavailable,
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
  INTERNAL: Code.Internal,
};

/**
 * The status an error thrown by a handler maps to: an RpcError keeps its code, a layer's typed
 * error its ErrorCode (`context`, if given, says what was attempted and prefixes the message);
 * anything else becomes `fallback` (UNKNOWN unless told) with its message.
 */
export function toRpcError(err: unknown, context?: string, fallback: StatusCode = Code.Unknown): RpcError {
  if (err instanceof RpcError) return err;
  const message = err instanceof Error ? err.message || err.name : String(err);
  const code = isCodedError(err) ? BY_ERROR_CODE[err.code] : fallback;
  return new RpcError(code, context ? `${context}: ${message}` : message, { cause: err });
}
