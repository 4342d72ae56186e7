// Typed errors of the hypervisor layer. Native errors carry a code that maps onto these.
export class VmError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = new.target.name;
  }
}
export class InvalidVmConfigError extends VmError {}
export class KvmUnavailableError extends VmError {}
export class KernelImageError extends VmError {}
export class MemoryBackingError extends VmError {}
export class VmStateError extends VmError {}
/** A snapshot is corrupt, truncated, of another version, or does not match the restoring VM. */
export class SnapshotError extends VmError {}

const BY_CODE: Record<string, new (message: string, code: string) => VmError> = {
  EINVALID_ARGUMENT: InvalidVmConfigError,
  EKVM_UNAVAILABLE: KvmUnavailableError,
  EKERNEL_IMAGE: KernelImageError,
  EMEMORY_BACKING: MemoryBackingError,
  ESTATE: VmStateError,
  ESNAPSHOT: SnapshotError,
};

/** Re-throws an error from the native addon as the matching typed error. */
export function fromNative(err: unknown): Error {
  const code = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof code === 'string') {
    const Ctor = BY_CODE[code] ?? VmError;
    return new Ctor(err.message, code);
  }
  return err instanceof Error ? err : new Error(String(err));
}
