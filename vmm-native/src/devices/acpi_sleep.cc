#include "acpi_sleep.h"

#include <cstring>

#include "../arch/x86/acpi.h"

namespace stencil {

void AcpiSleep::Read(uint64_t, uint8_t* data, uint32_t len) { std::memset(data, 0, len); }

void AcpiSleep::Write(uint64_t offset, const uint8_t* data, uint32_t len) {
  if (offset == 0 && len >= 1 && x86::IsPowerOffRequest(data[0])) on_poweroff_();
}

}  // namespace stencil
