#include "i8042.h"

#include <cstring>

namespace stencil {

namespace {
constexpr uint64_t kCommandPort = 4;  // 0x64 relative to 0x60
constexpr uint8_t kCmdResetCpu = 0xfe;
}  // namespace

void I8042::Read(uint64_t, uint8_t* data, uint32_t len) {
  std::memset(data, 0, len);  // status 0: input buffer empty, no output data
}

void I8042::Write(uint64_t offset, const uint8_t* data, uint32_t len) {
  if (offset == kCommandPort && len == 1 && data[0] == kCmdResetCpu) on_reset_();
}

}  // namespace stencil
