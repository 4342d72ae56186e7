// A guest that stops answering (a kernel deadlock, a livelocked vCPU, an agent stopped): its
// agent requests time out, and without this the pod could never be stopped: SIGKILL is a
// request too, so StopPodSandbox and `ctr task kill -9` would fail for as long as the guest hangs.
// Like Kata's agent health check, but only on demand (an idle pod costs no periodic wakeup):
// when a request times out, one ping decides. An answer means the guest is slow and the request
// alone fails, its error saying so with the VM's exit counts (a vCPU stuck in a fault loop while
// another runs the agent shows there); no answer means the guest is hung, and the pod ends (PodVm
// pauses its vCPUs and reports the end, so every container exits 255, as for a VM that died).
import type { AgentClient } from '../agent/client.js';
import { AgentTimeoutError } from '../agent/errors.js';
import { PodVmError } from './pod-errors.js';

/**
 * How long the ping after a timed-out request waits: half the request timeout. Generous, because
 * taking a starved but live guest (an overloaded host) for hung would kill its containers, while
 * a hung guest's pod only goes a little later.
 */
export function healthCheckTimeoutMs(requestTimeoutMs: number): number {
  return Math.max(1_000, Math.round(requestTimeoutMs / 2));
}

/** What the ping after a timed-out request found: an answer, a hung guest (the reason), or neither. */
type PingOutcome = { answered: true } | { answered: false; hung: string | undefined };

export class UnansweredGuestWatch {
  /** The ping under way: concurrent timeouts share it. */
  private checking: Promise<PingOutcome> | undefined;

  /**
   * @param onHung ends the pod; gets what went unanswered, returns (or resolves to) the reason its
   *   calls fail with, or undefined when the silence has another cause (a VM paused on purpose):
   *   then the request alone fails.
   * @param vmNote what a request that timed out while the guest answered a ping adds to its error
   *   ("; VM exits: {...}", or "" when there is nothing to add)
   */
  constructor(
    private readonly onHung: (unanswered: string) => string | undefined | Promise<string | undefined>,
    private readonly healthCheckMs: number,
    private readonly vmNote: () => string = () => '',
  ) {}

  /** Runs one request; a timeout is followed by the ping, and fails with the hung guest's reason if that goes unanswered too. */
  async request<T>(agent: AgentClient, call: (agent: AgentClient) => Promise<T>): Promise<T> {
    try {
      return await call(agent);
    } catch (err) {
      if (!(err instanceof AgentTimeoutError)) throw err;
      const outcome = await this.check(agent, err.message);
      if (outcome.answered) err.message += `, though the guest answered a ping${this.vmNote()}`;
      else if (outcome.hung) throw new PodVmError('UNAVAILABLE', outcome.hung, { cause: err });
      throw err;
    }
  }

  private check(agent: AgentClient, unanswered: string): Promise<PingOutcome> {
    this.checking ??= agent
      .ping({ timeoutMs: this.healthCheckMs })
      .then(
        (): PingOutcome => ({ answered: true }),
        async (err: unknown): Promise<PingOutcome> => ({
          answered: false,
          hung: err instanceof AgentTimeoutError ? await this.onHung(`${unanswered}, nor a ping within ${this.healthCheckMs} ms`) : undefined,
        }),
      )
      .finally(() => (this.checking = undefined));
    return this.checking;
  }
}
