// Test doubles for device tests: guest RAM as a plain buffer, and an interrupt line that counts.
#pragma once
#include <atomic>
#include <cstring>
#include <vector>

#include "../src/virtio/device.h"

namespace stencil::testing {

class FakeMemory : public GuestMemoryAccess {
 public:
  explicit FakeMemory(size_t size) : bytes(size, 0) {}
  uint8_t* Translate(uint64_t addr, uint64_t len) const override {
    if (addr > bytes.size() || len > bytes.size() - addr) return nullptr;
    return const_cast<uint8_t*>(bytes.data()) + addr;
  }
  template <typename T>
  void Put(uint64_t addr, T v) { std::memcpy(bytes.data() + addr, &v, sizeof v); }
  template <typename T>
  T Get(uint64_t addr) const { T v; std::memcpy(&v, bytes.data() + addr, sizeof v); return v; }
  std::vector<uint8_t> bytes;
};

class CountingInterrupt : public VirtioInterrupt {
 public:
  void SignalUsedBuffer() override { used++; }
  void SignalConfigChange() override { config++; }
  void SignalNeedsReset() override { needs_reset++; }
  std::atomic<int> used{0}, config{0}, needs_reset{0};
};

// A driver-side view of one split virtqueue laid out in FakeMemory at fixed offsets from `base`
// (a device with several queues gets one of these per queue, each at its own base). The avail
// index is published and the used index read with release/acquire ordering: devices serve the
// queue on their own threads.
class FakeDriverQueue {
 public:
  static constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;
  FakeDriverQueue(FakeMemory& mem, Virtqueue& q, uint16_t size, uint64_t base = 0)
      : mem_(mem), q_(q), size_(size), desc_(base + kDesc), avail_(base + kAvail), used_(base + kUsed) {
    q_.desc_addr = desc_, q_.avail_addr = avail_, q_.used_addr = used_;
    q_.set_size(size);
    q_.set_ready(true);
  }
  void Desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    uint64_t d = desc_ + i * 16ull;
    mem_.Put<uint64_t>(d, addr);
    mem_.Put<uint32_t>(d + 8, len);
    mem_.Put<uint16_t>(d + 12, flags);
    mem_.Put<uint16_t>(d + 14, next);
  }
  void Publish(uint16_t head) {
    mem_.Put<uint16_t>(avail_ + 4 + (avail_idx_ % size_) * 2, head);
    __atomic_store_n(Index(avail_ + 2), ++avail_idx_, __ATOMIC_RELEASE);
  }
  void set_avail_idx(uint16_t idx) { avail_idx_ = idx; }
  uint16_t avail_idx() const { return avail_idx_; }
  uint16_t used_idx() const { return __atomic_load_n(Index(used_ + 2), __ATOMIC_ACQUIRE); }
  uint32_t used_id(uint16_t slot) const { return mem_.Get<uint32_t>(used_ + 4 + (slot % size_) * 8); }
  uint32_t used_len(uint16_t slot) const { return mem_.Get<uint32_t>(used_ + 4 + (slot % size_) * 8 + 4); }
  // Puts the ring indexes where a snapshot left them (a restored guest's rings).
  void SetRingIndexes(uint16_t avail, uint16_t used) {
    avail_idx_ = avail;
    mem_.Put<uint16_t>(avail_ + 2, avail);
    mem_.Put<uint16_t>(used_ + 2, used);
  }

 private:
  uint16_t* Index(uint64_t addr) const { return reinterpret_cast<uint16_t*>(mem_.bytes.data() + addr); }
  FakeMemory& mem_;
  Virtqueue& q_;
  uint16_t size_;
  uint64_t desc_, avail_, used_;
  uint16_t avail_idx_ = 0;
};

}  // namespace stencil::testing
