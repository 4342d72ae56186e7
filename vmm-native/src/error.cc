#include "error.h"

namespace stencil {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "EINVALID_ARGUMENT";
    case ErrorCode::kKvmUnavailable: return "EKVM_UNAVAILABLE";
    case ErrorCode::kKernelImage: return "EKERNEL_IMAGE";
    case ErrorCode::kMemoryBacking: return "EMEMORY_BACKING";
    case ErrorCode::kKvm: return "EKVM";
    case ErrorCode::kState: return "ESTATE";
  }
  return "EUNKNOWN";
}

}  // namespace stencil
