// Typed errors of the hypervisor layer. Native errors carry a code (`nativeCode`, e.g.
// EINVALID_ARGUMENT) that picks the class and the shared ErrorCode every layer's errors carry.
import { ErrorCode } from '../../../common/src/errors.js';

export class VmError extends Error {
  readonly code: ErrorCode;
  constructor(message: string, readonly nativeCode: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = NATIVE[nativeCode]?.code ?? ErrorCode.Internal;
  }
}
export class InvalidVmConfigError extends VmError {}
export class KvmUnavailableError extends VmError {}
export class KernelImageError extends VmError {}
export class MemoryBackingError extends VmError {}
export class VmStateError extends VmError {}
/** A snapshot is corrupt, truncated, of another version, or does not match the restoring VM. */
export class SnapshotError extends VmError {}
/** A live migration was refused, cut off, corrupt or could not converge. */
export class MigrationError extends VmError {}
export class CancelledError extends VmError {}

type VmErrorClass = new (message: string, nativeCode: string, options?: ErrorOptions) => VmError;

const NATIVE: Record<string, { Class: VmErrorClass; code: ErrorCode }> = {
  EINVALID_ARGUMENT: { Class: InvalidVmConfigError, code: ErrorCode.InvalidArgument },
  // The host cannot run VMs (no /dev/kvm, no permission): fixed on the host, not by retrying.
  EKVM_UNAVAILABLE: { Class: KvmUnavailableError, code: ErrorCode.FailedPrecondition },
  // The configured kernel or initrd is missing or not a loadable image.
  EKERNEL_IMAGE: { Class: KernelImageError, code: ErrorCode.InvalidArgument },
  EMEMORY_BACKING: { Class: MemoryBackingError, code: ErrorCode.FailedPrecondition },
  ESTATE: { Class: VmStateError, code: ErrorCode.FailedPrecondition },
  // The snapshot is corrupt, truncated, of another format or does not fit the restoring VM.
  ESNAPSHOT: { Class: SnapshotError, code: ErrorCode.InvalidArgument },
  EMIGRATION: { Class: MigrationError, code: ErrorCode.Unavailable },
  ECANCELLED: { Class: CancelledError, code: ErrorCode.FailedPrecondition },
};

/** Re-throws an error from the native addon as the matching typed error. */
export function fromNative(err: unknown): Error {
  if (err instanceof VmError) return err; // already typed (its `code` is the shared one, not native)
  const nativeCode = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof nativeCode === 'string') {
    const Class = NATIVE[nativeCode]?.Class ?? VmError;
    return new Class(err.message, nativeCode, { cause: err });
  }
  return err instanceof Error ? err : new Error(String(err));
}
