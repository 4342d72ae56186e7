// Port-I/O and MMIO dispatch: a device registers a range; vCPU exits are routed to it with the
// offset into that range. Devices serialize their own state (several vCPUs may exit at once).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../snapshot/bytes.h"

namespace stencil {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  virtual const char* name() const = 0;
  virtual void Read(uint64_t offset, uint8_t* data, uint32_t len) = 0;
  virtual void Write(uint64_t offset, const uint8_t* data, uint32_t len) = 0;
  // Snapshot support, implemented next to each device (<device>_persist.cc). Called only while
  // the VM is paused; RestoreState on a fresh device before the vCPUs first run.
  virtual void SaveState(ByteWriter& out) = 0;
  virtual void RestoreState(ByteReader& in) = 0;
};

class Bus {
 public:
  // Throws VmmError if the range overlaps an existing one.
  void Register(uint64_t base, uint64_t size, std::shared_ptr<BusDevice> device);
  // False if nothing is mapped at addr (the caller decides what unmapped accesses do).
  bool Read(uint64_t addr, uint8_t* data, uint32_t len) const;
  bool Write(uint64_t addr, const uint8_t* data, uint32_t len) const;

 private:
  struct Range {
    uint64_t base, size;
    std::shared_ptr<BusDevice> device;
  };
  const Range* Find(uint64_t addr, uint32_t len) const;
  std::vector<Range> ranges_;  // written only before the vCPUs start; read-only afterwards
};

// A guest interrupt line (GSI) backed by an eventfd registered with KVM_IRQFD: any thread can
// raise it with one write(), no ioctl and no lock.
class IrqLine {
 public:
  IrqLine(int vm_fd, uint32_t gsi);
  ~IrqLine();
  IrqLine(const IrqLine&) = delete;
  IrqLine& operator=(const IrqLine&) = delete;
  void Trigger() const;
  uint32_t gsi() const { return gsi_; }

 private:
  int vm_fd_;
  uint32_t gsi_;
  int event_fd_;
};

}  // namespace stencil
