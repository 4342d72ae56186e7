// The part of a VM that does not depend on what runs in it: the KVM VM with its in-kernel
// irqchip and PIT, the vCPUs with their kvm_run mappings and, optionally, a host address range
// already registered as guest RAM. Once an irqchip exists, registering a memory slot waits for
// an SRCU grace period (~5-7 ms on kvm_pvm), so a restore takes a shell created before the
// request arrives and, on its critical path, only maps the snapshot's memory over the reserved
// range (MAP_FIXED; KVM resolves guest pages at fault time) and loads state.
#pragma once
#include "kvm_headers.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "fd.h"

namespace stencil {

// Host address space reserved (PROT_NONE) for guest RAM; unmapped on destruction unless taken.
class MemoryReservation {
 public:
  MemoryReservation() = default;
  MemoryReservation(uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  MemoryReservation(MemoryReservation&& o) noexcept : base_(std::exchange(o.base_, nullptr)), size_(o.size_) {}
  MemoryReservation& operator=(MemoryReservation&& o) noexcept;
  ~MemoryReservation();
  uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  // Something now maps over the range and owns it.
  void Release() { base_ = nullptr; }

 private:
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
};

struct ShellVcpu {
  UniqueFd fd;
  kvm_run* run = nullptr;
};

class VmShell {
 public:
  // Throws VmmError (kKvmUnavailable for a KVM lacking a capability, kKvm for failed ioctls).
  // memory_bytes > 0 reserves that much address space (PROT_NONE) and registers it as guest RAM.
  static VmShell Create(uint32_t vcpus, uint64_t memory_bytes = 0);
  VmShell() = default;
  VmShell(VmShell&& other) noexcept { *this = std::move(other); }
  VmShell& operator=(VmShell&& other) noexcept;
  ~VmShell();

  uint32_t vcpu_count() const { return static_cast<uint32_t>(vcpus.size()); }

  UniqueFd kvm;
  UniqueFd vm;
  int run_mmap_size = 0;
  std::vector<ShellVcpu> vcpus;  // whoever takes a vCPU's run mapping sets `run` to nullptr
  MemoryReservation memory;  // registered with KVM as guest RAM; empty unless requested
  // Where the registered RAM slots point, also after the reservation was handed to mapped RAM.
  uint8_t* ram_slots_base = nullptr;
};

}  // namespace stencil
