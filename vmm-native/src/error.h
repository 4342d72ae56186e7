// Errors raised by the VMM core. Every error carries a machine-readable code (mapped to a
// typed TypeScript error) and a message that names what was wrong.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace stencil {

enum class ErrorCode {
  kInvalidArgument,   // caller passed a bad value (memory size, vCPU count, path)
  kKvmUnavailable,    // /dev/kvm missing, no permission, wrong API version
  kKernelImage,       // kernel/initrd missing, unreadable or not a loadable image
  kMemoryBacking,     // tmpfs directory missing/full, mmap failure
  kKvm,               // a KVM ioctl failed
  kState,             // operation not valid in the VM's current state
  kSnapshot,          // a snapshot is corrupt, truncated, of another version or does not match the VM
  kHostCall,          // a host system call outside KVM failed (mount, umount)
  kMigration,         // a live migration failed: refused, cut off, corrupt stream, no convergence
  kCancelled,         // an operation was cancelled by its caller (migrate_cancel)
};

const char* ErrorCodeName(ErrorCode code);

class VmmError : public std::runtime_error {
 public:
  VmmError(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// "0x1f": addresses, MSR indexes and register values in messages.
std::string HexString(uint64_t value);

// Formats "<what>: <strerror(errno)>" using the errno at the time of the call.
inline std::string WithErrno(const std::string& what, int err = errno) {
  return what + ": " + std::strerror(err);
}

// "0x1f" for 31: addresses, MSRs, flags and hardware codes in messages.
inline std::string Hex(uint64_t value) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  do {
    out.insert(out.begin(), kDigits[value & 0xf]);
    value >>= 4;
  } while (value);
  return "0x" + out;
}

}  // namespace stencil
