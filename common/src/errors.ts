// The error codes every layer's typed errors carry (config, hypervisor, pod, agent), named like
// gRPC's (and so containerd's errdefs): the shim maps them onto RPC status codes in one place
// (rpc/errors.ts), so a layer's verdict (e.g. "invalid argument") reaches containerd unchanged.
export const ErrorCode = {
  InvalidArgument: 'INVALID_ARGUMENT',
  NotFound: 'NOT_FOUND',
  AlreadyExists: 'ALREADY_EXISTS',
  FailedPrecondition: 'FAILED_PRECONDITION',
  ResourceExhausted: 'RESOURCE_EXHAUSTED',
  Unimplemented: 'UNIMPLEMENTED',
  Unavailable: 'UNAVAILABLE',
  DeadlineExceeded: 'DEADLINE_EXCEEDED',
  Internal: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The shape every layer's typed error has. */
export interface CodedError extends Error {
  readonly code: ErrorCode;
}

const CODES = new Set<string>(Object.values(ErrorCode));

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && CODES.has(value);
}

/** Whether `err` is an Error whose `code` is one of ErrorCode (not, say, an errno name). */
export function isCodedError(err: unknown): err is CodedError {
  return err instanceof Error && isErrorCode((err as { code?: unknown }).code);
}
