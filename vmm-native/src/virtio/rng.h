// virtio-entropy (device type 4): fills the guest's buffers from the host's getrandom().
#pragma once
#include "device.h"

namespace stencil {

class VirtioRng : public VirtioDevice {
 public:
  const char* name() const override { return "virtio-rng"; }
  uint32_t device_type() const override { return 4; }
  uint64_t features() const override { return kVirtioFVersion1; }
  std::vector<uint16_t> queue_max_sizes() const override { return {256}; }
  void ReadConfig(uint64_t, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t, const uint8_t*, uint32_t) override {}
  void Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) override;
  void QueueNotify(uint32_t index) override;
  void Reset() override;
  // Requests are served synchronously on the notifying vCPU thread: with the vCPUs parked,
  // nothing touches guest memory, so there is nothing to stop.
  void Quiesce() override {}
  void Unquiesce() override {}
  void SaveState(ByteWriter& out) override;  // rng_persist.cc
  void RestoreState(ByteReader& in) override;
  uint64_t bytes_served() const { return bytes_served_; }

 private:
  const GuestMemoryAccess* mem_ = nullptr;
  Virtqueue* queue_ = nullptr;
  VirtioInterrupt* irq_ = nullptr;
  uint64_t bytes_served_ = 0;
};

}  // namespace stencil
