// The pod layer's typed error and the id checks every part of it shares.
import type { ErrorCode } from '../../../common/src/errors.js';

const MAX_CONTAINER_ID = 64;  // the agent's limit

export class PodVmError extends Error {
  override name = 'PodVmError';
  constructor(readonly code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Throws unless `id` is usable as a single path component and a VM name. */
export function validateId(kind: 'pod' | 'container', id: unknown, max: number): void {
  const bad = (why: string) => new PodVmError('INVALID_ARGUMENT', `invalid ${kind} id ${JSON.stringify(id)}: ${why}`);
  if (typeof id !== 'string' || id === '') throw bad('it is empty');
  if (id.length > max) throw bad(`it is ${id.length} characters long; at most ${max}`);
  if (id.includes('/')) throw bad("it contains '/'");
  if (id.includes('..')) throw bad("it contains '..'");
  if (!ID_RE.test(id)) throw bad('it must start with a letter or digit and contain only [A-Za-z0-9_.-]');
}

/** Container ids name the rootfs mount and go to the agent, which takes at most 64 characters. */
export function validateContainerId(id: unknown): void {
  validateId('container', id, MAX_CONTAINER_ID);
}
