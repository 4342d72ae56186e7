// Saved state of the 16550A: its registers, the latched THRE interrupt and unread input bytes.
#include "serial.h"

namespace stencil {

void Serial::SaveState(ByteWriter& out) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint8_t r : {ier_, lcr_, mcr_, scr_, dll_, dlm_, fcr_}) out.U8(r);
  out.Bool(thr_empty_irq_);
  out.Blob(std::vector<uint8_t>(rx_.begin(), rx_.end()));
}

void Serial::RestoreState(ByteReader& in) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint8_t* r : {&ier_, &lcr_, &mcr_, &scr_, &dll_, &dlm_, &fcr_}) *r = in.U8();
  thr_empty_irq_ = in.Bool();
  std::vector<uint8_t> rx = in.Blob();
  rx_.assign(rx.begin(), rx.end());
  // The interrupt line is edge-triggered through an irqfd, which KVM delivers from a worker: an
  // edge still in flight when the VM was saved is in no irqchip state. Signal a pending
  // condition again, or the guest's driver waits for it forever (a spurious one is harmless).
  if (InterruptPending() && irq_) irq_->Trigger();
}

}  // namespace stencil
