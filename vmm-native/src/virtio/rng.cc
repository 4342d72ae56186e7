#include "rng.h"

#include <sys/random.h>

#include <cstring>

namespace stencil {

namespace {
constexpr uint32_t kMaxRequest = 64 * 1024;  // cap per chain: a guest cannot make us spin forever
}

void VirtioRng::ReadConfig(uint64_t, uint8_t* data, uint32_t len) { std::memset(data, 0, len); }

void VirtioRng::Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) {
  mem_ = &mem;
  queue_ = &queues.at(0);
  irq_ = &irq;
}

void VirtioRng::Reset() { mem_ = nullptr, queue_ = nullptr, irq_ = nullptr; }

void VirtioRng::QueueNotify(uint32_t index) {
  if (index != 0 || !queue_) return;
  bool used = false;
  try {
    while (auto chain = queue_->Pop(*mem_)) {
      uint32_t written = 0;
      for (auto& buf : chain->writable) {
        uint32_t want = std::min(buf.len, kMaxRequest - written);
        ssize_t n = want ? getrandom(buf.data, want, 0) : 0;
        if (n > 0) written += static_cast<uint32_t>(n);
        if (written >= kMaxRequest) break;
      }
      bytes_served_ += written;
      queue_->PushUsed(*mem_, chain->head, written);
      used = true;
    }
  } catch (const VirtqueueError&) {
    irq_->SignalNeedsReset();
    return;
  }
  if (used && queue_->NeedsInterrupt(*mem_)) irq_->SignalUsedBuffer();
}

}  // namespace stencil
