// The part of a VM that does not depend on what runs in it: the KVM VM with its in-kernel
// irqchip and PIT, and the vCPUs with their kvm_run mappings. Creating the irqchip is the slow
// step (~7 ms on kvm_pvm, an SRCU grace period), so a restore can take a shell created before
// the request arrives and spend its critical path only on memory and state.
#pragma once
#include "kvm_headers.h"

#include <cstdint>
#include <vector>

#include "fd.h"

namespace stencil {

struct ShellVcpu {
  UniqueFd fd;
  kvm_run* run = nullptr;
};

class VmShell {
 public:
  // Throws VmmError (kKvmUnavailable for a KVM lacking a capability, kKvm for failed ioctls).
  static VmShell Create(uint32_t vcpus);
  VmShell() = default;
  VmShell(VmShell&&) = default;
  VmShell& operator=(VmShell&&) = default;
  ~VmShell();

  uint32_t vcpu_count() const { return static_cast<uint32_t>(vcpus.size()); }

  UniqueFd kvm;
  UniqueFd vm;
  int run_mmap_size = 0;
  std::vector<ShellVcpu> vcpus;  // whoever takes a vCPU's run mapping sets `run` to nullptr
};

}  // namespace stencil
