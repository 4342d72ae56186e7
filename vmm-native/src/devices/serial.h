// 16550A UART (COM1): the guest console. Output bytes go to a sink the VM owner chooses; input
// bytes are queued by the owner and raise the receive interrupt.
#pragma once
#include <deque>
#include <functional>
#include <mutex>

#include "bus.h"

namespace stencil {

class Serial : public BusDevice {
 public:
  using Sink = std::function<void(const uint8_t* data, size_t len)>;
  Serial(const IrqLine* irq, Sink sink) : irq_(irq), sink_(std::move(sink)) {}

  const char* name() const override { return "serial 8250"; }
  void Read(uint64_t offset, uint8_t* data, uint32_t len) override;
  void Write(uint64_t offset, const uint8_t* data, uint32_t len) override;
  void SaveState(ByteWriter& out) override;
  void RestoreState(ByteReader& in) override;
  void QueueInput(const uint8_t* data, size_t len);

 private:
  uint8_t ReadRegister(uint64_t offset);
  void WriteRegister(uint64_t offset, uint8_t value);
  bool InterruptPending() const;
  void UpdateInterrupt(bool was_pending);

  std::mutex mu_;
  const IrqLine* irq_;
  Sink sink_;
  std::deque<uint8_t> rx_;
  uint8_t ier_ = 0, lcr_ = 0x03, mcr_ = 0x08, scr_ = 0, dll_ = 0x0c, dlm_ = 0, fcr_ = 0;
  bool thr_empty_irq_ = false;  // THRE interrupt latched until IIR is read or THR written
};

}  // namespace stencil
