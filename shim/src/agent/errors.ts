// Errors of the agent client. Every one names the RPC and, where there is one, the container
// (and exec) it was about, so a log line alone tells what failed where.

/** The agent's error codes (proto ErrorCode without its prefix), plus the client's own. */
export type AgentErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'RUNTIME'
  | 'INTERNAL'
  | 'UNIMPLEMENTED'
  | 'PROTOCOL'
  | 'UNSPECIFIED'
  /** No answer within the call's timeout. */
  | 'TIMEOUT'
  /** The connection to the agent failed or closed. */
  | 'CONNECTION';

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
