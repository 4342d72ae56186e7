// ACPI hardware-reduced sleep control/status registers (two byte-wide ports). Writing S5 with
// SLP_EN powers the VM off; other sleep states are not supported and are ignored.
#pragma once
#include <functional>

#include "bus.h"

namespace stencil {

class AcpiSleep : public BusDevice {
 public:
  explicit AcpiSleep(std::function<void()> on_poweroff) : on_poweroff_(std::move(on_poweroff)) {}
  const char* name() const override { return "acpi-sleep"; }
  void Read(uint64_t offset, uint8_t* data, uint32_t len) override;
  void Write(uint64_t offset, const uint8_t* data, uint32_t len) override;

 private:
  std::function<void()> on_poweroff_;
};

}  // namespace stencil
