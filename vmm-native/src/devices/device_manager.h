// Which devices a VM has and where: kind, bus, address range, IRQ and properties of each, in
// creation order. The boot path builds the layout; a snapshot records it; a restore rebuilds it
// from the same configuration and checks it against the record, so a clone's guest finds every
// device where its drivers left it. The snapshot code reaches device state only through here
// (BusDevice::SaveState/RestoreState), never into a device.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../snapshot/bytes.h"
#include "../virtio/device.h"
#include "bus.h"

namespace stencil {

using DeviceProperties = std::vector<std::pair<std::string, std::string>>;

struct DeviceRecord {
  std::string kind;  // "serial", "i8042", "acpi-pm", "virtio-rng", "virtio-blk", "virtio-vsock", "virtio-9p"
  bool mmio = false;  // false: port I/O
  uint64_t base = 0, size = 0;
  uint32_t irq = 0;  // 0: none
  DeviceProperties guest;  // what the guest sees (tag, serial, read-only): must match on restore
  DeviceProperties host;   // host-side wiring (file paths, socket path): may differ in a clone

  std::string Describe() const;  // "virtio-blk at mmio 0xd0001000 irq 6"
};

class DeviceManager {
 public:
  DeviceManager(int vm_fd, Bus& pio, Bus& mmio) : vm_fd_(vm_fd), pio_(pio), mmio_(mmio) {}
  DeviceManager(const DeviceManager&) = delete;
  DeviceManager& operator=(const DeviceManager&) = delete;

  // An interrupt line the device manager owns (lives as long as the devices).
  const IrqLine* NewIrq(uint32_t gsi);
  void AddPio(DeviceRecord record, std::shared_ptr<BusDevice> device);
  // Places a virtio device behind its own virtio-mmio window at the next address and IRQ;
  // returns the kernel command-line entry declaring it.
  std::string AddVirtio(const std::string& kind, DeviceProperties guest, DeviceProperties host,
                        std::unique_ptr<VirtioDevice> device, const GuestMemoryAccess& mem);

  // VM pause/resume: virtio devices stop/continue touching guest memory.
  void QuiesceVirtio();
  void UnquiesceVirtio();

  const std::vector<DeviceRecord>& layout() const { return records_; }
  BusDevice& device(size_t index) { return *devices_.at(index); }
  size_t count() const { return devices_.size(); }

  static void EncodeLayout(const std::vector<DeviceRecord>& layout, ByteWriter& out);
  static std::vector<DeviceRecord> DecodeLayout(ByteReader& in);
  // Throws VmmError(kSnapshot) naming the first device (and field) that differs from `saved`.
  void CheckLayout(const std::vector<DeviceRecord>& saved) const;

 private:
  int vm_fd_;
  Bus& pio_;
  Bus& mmio_;
  uint32_t next_virtio_irq_;
  uint64_t next_virtio_base_;
  bool virtio_started_ = false;
  // Declared first so it is destroyed last: device threads may raise interrupts until they stop.
  std::vector<std::unique_ptr<IrqLine>> irqs_;
  std::vector<DeviceRecord> records_;
  std::vector<std::shared_ptr<BusDevice>> devices_;
  std::vector<class VirtioMmio*> virtio_;
};

}  // namespace stencil
