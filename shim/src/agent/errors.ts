// Errors of the agent client. Every one names the RPC and, where there is one, the container
// (and exec) it was about, so a log line alone tells what failed where.

import type { ErrorCode } from '../../../common/src/errors.js';

/**
 * The agent's error codes (proto ErrorCode without its prefix) and the client's own: the shared
 * codes (DEADLINE_EXCEEDED: no answer within the call's timeout; UNAVAILABLE: the connection
 * failed or closed), plus three with no counterpart there, which reach containerd as INTERNAL:
 * RUNTIME (crun failed), PROTOCOL (a malformed message) and UNSPECIFIED.
 */
export type AgentErrorCode = ErrorCode | 'RUNTIME' | 'PROTOCOL' | 'UNSPECIFIED';

export interface AgentErrorContext {
  rpc: string;
  containerId?: string;
  execId?: string;
}

function where(ctx: AgentErrorContext): string {
  if (!ctx.containerId) return ctx.rpc;
  return `${ctx.rpc}(${ctx.containerId}${ctx.execId ? `/${ctx.execId}` : ''})`;
}

export class AgentError extends Error {
  readonly rpc: string;
  readonly containerId?: string;
  readonly execId?: string;
  constructor(
    readonly code: AgentErrorCode,
    detail: string,
    ctx: AgentErrorContext,
    options?: ErrorOptions,
  ) {
    super(`agent ${where(ctx)}: ${detail}`, options);
    this.name = new.target.name;
    this.rpc = ctx.rpc;
    this.containerId = ctx.containerId;
    this.execId = ctx.execId;
  }
}

/** The agent answered with an error. */
export class AgentCallError extends AgentError {}
export class AgentTimeoutError extends AgentError {}
export class AgentConnectionError extends AgentError {}
