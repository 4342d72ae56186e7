// What a virtio device implements; the virtio-mmio transport (mmio.h) does the rest. Each
// device owns its queues' processing, its config space and (later) its own saved state.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../snapshot/bytes.h"
#include "queue.h"

namespace stencil {

class VirtioInterrupt {
 public:
  virtual ~VirtioInterrupt() = default;
  virtual void SignalUsedBuffer() = 0;     // interrupt status bit 0
  virtual void SignalConfigChange() = 0;   // interrupt status bit 1
  virtual void SignalNeedsReset() = 0;     // the driver broke the contract: DEVICE_NEEDS_RESET
};

constexpr uint64_t kVirtioFVersion1 = 1ULL << 32;

// Where each of a device's N queues stood, for devices that save their own queue positions: the
// transport's copy cannot account for chains the device popped but has not used yet.
template <size_t N>
struct QueueIndexes {
  uint16_t next_avail[N] = {};
  uint16_t next_used[N] = {};
  void Capture(Virtqueue* const (&queues)[N]) {
    for (size_t i = 0; i < N; i++) next_avail[i] = queues[i]->next_avail(), next_used[i] = queues[i]->next_used();
  }
  void ApplyTo(Virtqueue* const (&queues)[N]) const {
    for (size_t i = 0; i < N; i++) queues[i]->RestoreIndexes(next_avail[i], next_used[i]);
  }
  void Write(ByteWriter& out) const {
    for (size_t i = 0; i < N; i++) out.U16(next_avail[i]), out.U16(next_used[i]);
  }
  void Read(ByteReader& in) {
    for (size_t i = 0; i < N; i++) next_avail[i] = in.U16(), next_used[i] = in.U16();
  }
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;
  virtual const char* name() const = 0;
  virtual uint32_t device_type() const = 0;  // virtio device ID (4 = entropy, 3 = console, ...)
  virtual uint64_t features() const = 0;     // offered features, VIRTIO_F_VERSION_1 included
  virtual std::vector<uint16_t> queue_max_sizes() const = 0;
  virtual void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) = 0;
  virtual void WriteConfig(uint64_t offset, const uint8_t* data, uint32_t len) = 0;
  // Called once the driver sets DRIVER_OK; queues are configured and ready.
  virtual void Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) = 0;
  // The driver notified queue `index` (called on a vCPU thread, under the transport's lock).
  virtual void QueueNotify(uint32_t index) = 0;
  // Device reset by the driver: stop using queues and memory.
  virtual void Reset() = 0;

  // VM pause: stop touching guest memory and return once nothing is in flight; Unquiesce
  // continues (serving whatever the guest published meanwhile).
  virtual void Quiesce() = 0;
  virtual void Unquiesce() = 0;
  // Snapshot support (the transport saves the queues; this is the device's own part).
  // RestoreState runs on a fresh device before the transport activates it again.
  virtual void SaveState(ByteWriter& out) = 0;
  virtual void RestoreState(ByteReader& in) = 0;
};

}  // namespace stencil
