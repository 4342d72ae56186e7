#include "serial.h"

namespace stencil {

namespace {
// Register offsets and bits (see the 16550A data sheet).
constexpr uint8_t kIerRxData = 0x01, kIerThrEmpty = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirThrEmpty = 0x02, kIirRxData = 0x04, kIirFifoEnabled = 0xc0;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kLsrDataReady = 0x01, kLsrThrEmpty = 0x20, kLsrIdle = 0x40;
constexpr uint8_t kMcrLoop = 0x10;
constexpr size_t kRxLimit = 64 * 1024;  // bytes buffered before input is dropped
}  // namespace

bool Serial::InterruptPending() const {
  return ((ier_ & kIerRxData) && !rx_.empty()) || ((ier_ & kIerThrEmpty) && thr_empty_irq_);
}

void Serial::UpdateInterrupt(bool was_pending) {
  // Edge-triggered line: signal each time a new condition appears.
  if (!was_pending && InterruptPending() && irq_) irq_->Trigger();
}

void Serial::Read(uint64_t offset, uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 0; i < len; i++) data[i] = ReadRegister(offset + i);
}

void Serial::Write(uint64_t offset, const uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 0; i < len; i++) WriteRegister(offset + i, data[i]);
}

uint8_t Serial::ReadRegister(uint64_t offset) {
  bool was = InterruptPending();
  uint8_t v = 0;
  switch (offset) {
    case 0:
      if (lcr_ & kLcrDlab) return dll_;
      if (!rx_.empty()) {
        v = rx_.front();
        rx_.pop_front();
      }
      break;
    case 1: return (lcr_ & kLcrDlab) ? dlm_ : ier_;
    case 2:
      v = (fcr_ & 1) ? kIirFifoEnabled : 0;
      if ((ier_ & kIerRxData) && !rx_.empty()) {
        v |= kIirRxData;
      } else if ((ier_ & kIerThrEmpty) && thr_empty_irq_) {
        v |= kIirThrEmpty;
        thr_empty_irq_ = false;  // reading IIR acknowledges THRE
      } else {
        v |= kIirNone;
      }
      break;
    case 3: return lcr_;
    case 4: return mcr_;
    case 5: return kLsrThrEmpty | kLsrIdle | (rx_.empty() ? 0 : kLsrDataReady);
    case 6:
      if (mcr_ & kMcrLoop) {
        // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD (Linux probes the UART this way).
        return static_cast<uint8_t>(((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) | ((mcr_ & 0x04) << 4) |
                                    ((mcr_ & 0x08) << 4));
      }
      return 0xb0;  // DCD, DSR, CTS
    case 7: return scr_;
  }
  UpdateInterrupt(was);
  return v;
}

void Serial::WriteRegister(uint64_t offset, uint8_t value) {
  bool was = InterruptPending();
  switch (offset) {
    case 0:
      if (lcr_ & kLcrDlab) {
        dll_ = value;
        return;
      }
      if (mcr_ & kMcrLoop) {
        if (rx_.size() < kRxLimit) rx_.push_back(value);
      } else if (sink_) {
        sink_(&value, 1);
      }
      thr_empty_irq_ = true;  // transmission is instantaneous
      break;
    case 1:
      if (lcr_ & kLcrDlab) {
        dlm_ = value;
        return;
      }
      if (!(ier_ & kIerThrEmpty) && (value & kIerThrEmpty)) thr_empty_irq_ = true;
      ier_ = value & 0x0f;
      break;
    case 2:
      fcr_ = value;
      if (value & 0x02) rx_.clear();  // clear receive FIFO
      break;
    case 3: lcr_ = value; break;
    case 4: mcr_ = value & 0x1f; break;
    case 7: scr_ = value; break;
    default: break;  // LSR/MSR are read-only
  }
  UpdateInterrupt(was);
}

void Serial::QueueInput(const uint8_t* data, size_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  bool was = InterruptPending();
  for (size_t i = 0; i < len && rx_.size() < kRxLimit; i++) rx_.push_back(data[i]);
  UpdateInterrupt(was);
}

}  // namespace stencil
