// Saved state of the ACPI PM1 block: the enable and control registers as the guest wrote them.
#include "acpi_pm.h"

namespace stencil {

void AcpiPm::SaveState(ByteWriter& out) {
  std::lock_guard<std::mutex> lock(mu_);
  out.Raw(regs_, sizeof regs_);
}

void AcpiPm::RestoreState(ByteReader& in) {
  std::lock_guard<std::mutex> lock(mu_);
  in.Raw(regs_, sizeof regs_, "PM1 registers");
}

}  // namespace stencil
