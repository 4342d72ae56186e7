#include "acpi_pm.h"

#include <cstring>

#include "../arch/x86/acpi.h"

namespace stencil {

namespace {
constexpr uint64_t kControl = 4;
constexpr uint8_t kSciEnable = 1;  // PM1 control bit 0: the platform is in ACPI mode
}  // namespace

void AcpiPm::Read(uint64_t offset, uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 0; i < len; i++) {
    uint64_t off = offset + i;
    if (off < 2 || off >= sizeof regs_) {
      data[i] = 0;  // PM1 status: no event is ever pending
    } else {
      data[i] = regs_[off] | (off == kControl ? kSciEnable : 0);
    }
  }
}

void AcpiPm::Write(uint64_t offset, const uint8_t* data, uint32_t len) {
  bool power_off = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint32_t i = 0; i < len && offset + i < sizeof regs_; i++) regs_[offset + i] = data[i];
    if (offset <= kControl && offset + len > kControl + 1) {
      uint16_t control = static_cast<uint16_t>(regs_[kControl] | (regs_[kControl + 1] << 8));
      power_off = x86::IsPowerOffRequest(control);
    }
  }
  if (power_off) on_poweroff_();
}

}  // namespace stencil
