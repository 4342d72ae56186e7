// Waiting for a VM's agent to answer on vsock: the guest may still be booting (or resuming), so
// connection attempts are retried until a deadline, and given up at once if the VM ends. Used by
// pods (PodVm) and by template builds, which both need the agent up before going on.
import { setTimeout as delay } from 'node:timers/promises';
import { AgentClient } from '../agent/client.js';
import { connectVsock } from '../agent/vsock.js';
import { describeExit, type VirtualMachine } from '../hypervisor/types.js';
import type { Logger } from '../util/log.js';

const RETRY_DELAY_MS = 200;
/** Opening one agent connection (vsock handshake + hello). */
export const CONNECT_TIMEOUT_MS = 10_000;

export interface AgentWaitOptions {
  vsockPath: string;
  agentPort: number;
  timeoutMs: number;
  /** Default timeout of the connected client's calls. */
  callTimeoutMs: number;
  logger?: Logger;
}

export interface AgentWaitResult {
  client: AgentClient;
  /**
   * Ends when the last abandoned attempt has (it is closed as soon as it connects); a VM's
   * teardown awaits this so no connection outlives it.
   */
  abandoned: Promise<void>;
}

export class AgentWaitError extends Error {
  override name = 'AgentWaitError';
  constructor(
    message: string,
    readonly abandoned: Promise<void>,
  ) {
    super(message);
  }
}

/** Connects to the agent in `vm`, retrying while the guest comes up. */
export async function waitForAgent(vm: VirtualMachine, o: AgentWaitOptions): Promise<AgentWaitResult> {
  const deadline = Date.now() + o.timeoutMs;
  let ended = false;
  const exited = vm.waitExit().then((exit) => {
    ended = true;
    return exit;
  });
  let abandoned: Promise<void> = Promise.resolve();
  let lastError = 'no attempt finished';
  for (let attempt = 1; ; attempt++) {
    const remaining = deadline - Date.now();
    if (ended) {
      const exit = await exited;
      throw new AgentWaitError(`the VM ended before the agent answered: ${describeExit(exit)}`, abandoned);
    }
    if (remaining <= 0) throw new AgentWaitError(`the agent did not answer within ${o.timeoutMs} ms (${attempt - 1} attempts; last: ${lastError})`, abandoned);
    const connecting = AgentClient.connect({
      connect: () => connectVsock(o.vsockPath, o.agentPort, CONNECT_TIMEOUT_MS),
      timeoutMs: o.callTimeoutMs,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      logger: o.logger,
    });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      connecting.then((client) => ({ client }), (err: Error) => ({ err })),
      exited.then(() => ({ err: new Error('the VM ended') })),
      new Promise<{ err: Error }>((resolve) => {
        timer = setTimeout(() => resolve({ err: new Error(`no answer within ${remaining} ms`) }), remaining);
      }),
    ]);
    clearTimeout(timer);
    if ('client' in outcome) {
      o.logger?.debug('agent connected', { attempt });
      return { client: outcome.client, abandoned };
    }
    // An attempt still under way is closed when it ends.
    const previous = abandoned;
    abandoned = Promise.all([previous, connecting.then((late) => late.close(), () => undefined)]).then(() => undefined);
    lastError = outcome.err.message;
    await Promise.race([delay(Math.min(RETRY_DELAY_MS, Math.max(0, deadline - Date.now()))), exited]);
  }
}
