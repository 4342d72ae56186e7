// Mapping of pod/agent failures onto the gRPC codes containerd interprets (errdefs), and the
// validation of ids that end up in paths.
import { AgentError, type AgentErrorCode } from '../agent/errors.js';
import { Code, RpcError } from '../rpc/errors.js';

const AGENT_TO_RPC: Partial<Record<AgentErrorCode, number>> = {
  INVALID_ARGUMENT: Code.InvalidArgument,
  NOT_FOUND: Code.NotFound,
  ALREADY_EXISTS: Code.AlreadyExists,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  UNIMPLEMENTED: Code.Unimplemented,
  TIMEOUT: Code.DeadlineExceeded,
  CONNECTION: Code.Unavailable,
};

/** An RpcError for a failed pod call: agent codes keep their meaning, the message says what was attempted. */
export function agentErrorToRpc(err: unknown, what: string): RpcError {
  if (err instanceof RpcError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = err instanceof AgentError ? (AGENT_TO_RPC[err.code] ?? Code.Internal) : Code.Internal;
  return new RpcError(code, `${what}: ${message}`);
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Container and exec ids name directories and guest objects: refuse anything path-like. */
export function validateId(value: unknown, field: string): string {
  const id = typeof value === 'string' ? value : '';
  if (!ID_RE.test(id)) {
    throw new RpcError(Code.InvalidArgument, `${field} ${JSON.stringify(value ?? '')} is invalid: use 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit`);
  }
  return id;
}
