// virtio-mmio transport, version 2 (virtio 1.x, section 4.2). One 4 KiB window per device,
// declared to the guest with `virtio_mmio.device=4K@<addr>:<irq>` on the kernel command line.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../devices/bus.h"
#include "device.h"

namespace stencil {

class VirtioMmio : public BusDevice, private VirtioInterrupt {
 public:
  VirtioMmio(std::unique_ptr<VirtioDevice> device, const GuestMemoryAccess& mem, const IrqLine* irq);
  // Stops the device (and its worker threads) before the queues they use are freed.
  ~VirtioMmio();
  const char* name() const override { return device_->name(); }
  void Read(uint64_t offset, uint8_t* data, uint32_t len) override;
  void Write(uint64_t offset, const uint8_t* data, uint32_t len) override;

  // VM pause: the device stops touching guest memory (see VirtioDevice::Quiesce).
  void Quiesce() { device_->Quiesce(); }
  void Unquiesce() { device_->Unquiesce(); }
  // mmio_persist.cc: transport registers, every queue's layout and indexes, then the device's
  // own state. Restoring an activated device activates it again.
  void SaveState(ByteWriter& out) override;
  void RestoreState(ByteReader& in) override;

  // Kernel command-line fragment declaring this device.
  static std::string CmdlineEntry(uint64_t base, uint32_t irq);

 private:
  uint32_t ReadRegister(uint64_t offset);
  void WriteRegister(uint64_t offset, uint32_t value);
  void SetStatus(uint32_t status);
  void ResetLocked();
  Virtqueue* SelectedQueue();
  void SignalUsedBuffer() override;
  void SignalConfigChange() override;
  void SignalNeedsReset() override;

  std::mutex mu_;
  std::unique_ptr<VirtioDevice> device_;
  const GuestMemoryAccess& mem_;
  const IrqLine* irq_;
  std::vector<Virtqueue> queues_;
  uint32_t device_features_sel_ = 0, driver_features_sel_ = 0, queue_sel_ = 0;
  uint64_t driver_features_ = 0;
  std::atomic<uint32_t> status_{0};
  // Raised from device worker threads as well as vCPU threads, hence atomic.
  std::atomic<uint32_t> interrupt_status_{0};
  std::atomic<uint32_t> config_generation_{0};
  bool activated_ = false;
};

}  // namespace stencil
