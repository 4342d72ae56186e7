// ACPI PM1a event (status/enable) and control registers in port I/O. Writing SLP_TYP=S5 with
// SLP_EN to PM1 control powers the VM off; other sleep states are not supported and ignored.
#pragma once
#include <functional>
#include <mutex>

#include "bus.h"

namespace stencil {

class AcpiPm : public BusDevice {
 public:
  explicit AcpiPm(std::function<void()> on_poweroff) : on_poweroff_(std::move(on_poweroff)) {}
  const char* name() const override { return "acpi-pm"; }
  // Offsets 0-1 PM1 status, 2-3 PM1 enable, 4-5 PM1 control.
  void Read(uint64_t offset, uint8_t* data, uint32_t len) override;
  void Write(uint64_t offset, const uint8_t* data, uint32_t len) override;
  void SaveState(ByteWriter& out) override;
  void RestoreState(ByteReader& in) override;

 private:
  std::mutex mu_;
  uint8_t regs_[6] = {};
  std::function<void()> on_poweroff_;
};

}  // namespace stencil
