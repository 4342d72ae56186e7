#include "error.h"

#include <cstdio>

namespace stencil {

std::string HexString(uint64_t value) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
  return buf;
}

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "EINVALID_ARGUMENT";
    case ErrorCode::kKvmUnavailable: return "EKVM_UNAVAILABLE";
    case ErrorCode::kKernelImage: return "EKERNEL_IMAGE";
    case ErrorCode::kMemoryBacking: return "EMEMORY_BACKING";
    case ErrorCode::kKvm: return "EKVM";
    case ErrorCode::kState: return "ESTATE";
    case ErrorCode::kSnapshot: return "ESNAPSHOT";
    case ErrorCode::kHostCall: return "EHOST_CALL";
    case ErrorCode::kMigration: return "EMIGRATION";
    case ErrorCode::kCancelled: return "ECANCELLED";
  }
  return "EUNKNOWN";
}

}  // namespace stencil
