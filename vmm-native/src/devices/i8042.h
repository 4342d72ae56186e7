// Just enough of the PS/2 controller for the guest to reset the machine: Linux's `reboot`
// (reboot=k) pulses the CPU reset line by writing 0xFE to the command port.
#pragma once
#include <functional>

#include "bus.h"

namespace stencil {

class I8042 : public BusDevice {
 public:
  explicit I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}
  const char* name() const override { return "i8042"; }
  // Ports 0x60 (data) and 0x64 (status/command) are registered as one range 0x60..0x64.
  void Read(uint64_t offset, uint8_t* data, uint32_t len) override;
  void Write(uint64_t offset, const uint8_t* data, uint32_t len) override;
  void SaveState(ByteWriter& out) override;
  void RestoreState(ByteReader& in) override;

 private:
  std::function<void()> on_reset_;
};

}  // namespace stencil
