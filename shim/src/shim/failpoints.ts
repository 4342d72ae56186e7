// Fault injection at named steps of the task lifecycle, for tests of what containerd sees when a
// shim, a guest or a container dies half-way (in the spirit of containerd's failpoint shim, which
// reads its failpoints from annotations). A container asks for one with the OCI annotation
// `io.stencil.failpoint.<step>=<action>`; the shim honours them only when the runtime
// configuration says `[runtime] failpoints = true`, and refuses such a container otherwise, so a
// production pod can never be made to fail by its own spec.
//
// Each action is the real fault, done at that instant: kill-shim is a SIGKILL of the shim daemon
// (its VM goes with it), panic-guest an NMI that panics the guest kernel (the step goes on once
// the VM has ended), kill-container a SIGKILL of the step's process inside the guest.
import type { Pod } from '../pod/types.js';
import { Code, RpcError } from '../rpc/errors.js';
import type { Logger } from '../util/log.js';
import { withDeadline } from '../util/deadline.js';

export const FAILPOINT_ANNOTATION_PREFIX = 'io.stencil.failpoint.';

export const FAILPOINT_STEPS = [
  /** Create: the pod's VM runs, the container is not made yet. */
  'create.vm-ready',
  /** Create: the container and its init exist in the guest, the reply is not sent yet. */
  'create.container-made',
  /** Start: the init runs in the guest, the reply and TaskStart are not sent yet. */
  'start.container-running',
  /** Exec: the process is registered with its stdio open, not started yet; the reply is not sent yet. */
  'exec.added',
  /** Start of an exec: the process runs in the guest, the reply is not sent yet. */
  'exec.process-started',
  /** Delete: the guest forgot the container, the rootfs is still mounted and no reply sent. */
  'delete.container-gone',
] as const;
export type FailpointStep = (typeof FAILPOINT_STEPS)[number];

export const FAILPOINT_ACTIONS = ['kill-shim', 'panic-guest', 'kill-container'] as const;
export type FailpointAction = (typeof FAILPOINT_ACTIONS)[number];

export type Failpoints = ReadonlyMap<FailpointStep, FailpointAction>;

/**
 * The failpoints a container's annotations ask for. Throws InvalidArgument naming the annotation
 * for an unknown step or action, or for any failpoint while they are not enabled.
 */
export function failpointsOf(containerId: string, annotations: unknown, enabled: boolean): Failpoints {
  const found = new Map<FailpointStep, FailpointAction>();
  if (typeof annotations !== 'object' || annotations === null) return found;
  for (const [key, value] of Object.entries(annotations as Record<string, unknown>)) {
    if (!key.startsWith(FAILPOINT_ANNOTATION_PREFIX)) continue;
    const bad = (why: string) => new RpcError(Code.InvalidArgument, `task ${containerId}: annotation ${key}: ${why}`);
    if (!enabled) throw bad('failpoints are off (a test-only setting: [runtime] failpoints = true in the runtime configuration)');
    const step = key.slice(FAILPOINT_ANNOTATION_PREFIX.length);
    if (!(FAILPOINT_STEPS as readonly string[]).includes(step)) throw bad(`unknown step ${JSON.stringify(step)} (steps: ${FAILPOINT_STEPS.join(', ')})`);
    if (!(FAILPOINT_ACTIONS as readonly string[]).includes(value as string))
      throw bad(`unknown action ${JSON.stringify(value)} (actions: ${FAILPOINT_ACTIONS.join(', ')})`);
    found.set(step as FailpointStep, value as FailpointAction);
  }
  return found;
}

/** How long a panic-guest failpoint waits for the VM to end. */
const PANIC_TIMEOUT_MS = 60_000;

export interface FailpointHit {
  pod: Pod;
  /** The task's failpoints; absent for a task that came with a migration. */
  points: Failpoints | undefined;
  step: FailpointStep;
  /** The container, and the exec ('' = the init) the step is about. */
  id: string;
  execId?: string;
  log: Logger;
}

/** Carries out the failpoint of `step`, if the task has one there. */
export async function hitFailpoint({ pod, points, step, id, execId = '', log }: FailpointHit): Promise<void> {
  const action = points?.get(step);
  if (!action) return;
  log.warn('failpoint hit', { id, execId: execId || undefined, step, action });
  switch (action) {
    case 'kill-shim':
      process.kill(process.pid, 'SIGKILL');
      return;
    case 'panic-guest': {
      pod.injectNmi();
      await withDeadline(pod.ended, PANIC_TIMEOUT_MS, () => new Error(`failpoint ${step}: the VM did not end within ${PANIC_TIMEOUT_MS} ms of its NMI`));
      return;
    }
    case 'kill-container':
      await pod.signalProcess(id, execId, 9);
      await pod.waitProcess(id, execId);
      return;
  }
}
