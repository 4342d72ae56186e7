#include "vm_shell.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <string>
#include <utility>

#include "arch/x86/layout.h"
#include "error.h"
#include "kvm.h"
#include "memory.h"

namespace stencil {

VmShell::~VmShell() {
  for (auto& v : vcpus)
    if (v.run) munmap(v.run, run_mmap_size);
}

MemoryReservation& MemoryReservation::operator=(MemoryReservation&& o) noexcept {
  if (this != &o) {
    if (base_) munmap(base_, size_);
    base_ = std::exchange(o.base_, nullptr);
    size_ = o.size_;
  }
  return *this;
}

MemoryReservation::~MemoryReservation() {
  if (base_) munmap(base_, size_);
}

VmShell& VmShell::operator=(VmShell&& other) noexcept {
  if (this == &other) return *this;
  this->~VmShell();
  kvm = std::move(other.kvm);
  vm = std::move(other.vm);
  run_mmap_size = other.run_mmap_size;
  vcpus = std::move(other.vcpus);
  other.vcpus.clear();
  memory = std::move(other.memory);
  ram_slots_base = std::exchange(other.ram_slots_base, nullptr);
  return *this;
}

VmShell VmShell::Create(uint32_t vcpu_count, uint64_t memory_bytes) {
  VmShell shell;
  shell.kvm = OpenKvm();
  int kvm = shell.kvm.get();
  const std::pair<long, const char*> required[] = {
      {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},          {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"}, {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
      {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
  };
  for (auto& [cap, name] : required)
    if (CheckExtension(kvm, cap) <= 0) throw VmmError(ErrorCode::kKvmUnavailable, std::string("this KVM lacks ") + name);
  int max_vcpus = CheckExtension(kvm, KVM_CAP_MAX_VCPUS);
  if (max_vcpus > 0 && vcpu_count > static_cast<uint32_t>(max_vcpus))
    throw VmmError(ErrorCode::kInvalidArgument, "vCPU count " + std::to_string(vcpu_count) +
                                                    " exceeds this host's KVM limit of " + std::to_string(max_vcpus));
  shell.vm.reset(CreateVmFd(kvm));
  if (!shell.vm.valid()) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_VM"));
  int vm = shell.vm.get();
  shell.run_mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (shell.run_mmap_size <= 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_GET_VCPU_MMAP_SIZE"));
  if (ioctl(vm, KVM_SET_TSS_ADDR, x86::kTssAddr) < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_TSS_ADDR"));
  uint64_t identity = x86::kIdentityMapAddr;
  if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
    throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_IDENTITY_MAP_ADDR"));
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_IRQCHIP"));
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_PIT2"));

  for (uint32_t i = 0; i < vcpu_count; i++) {
    ShellVcpu v;
    v.fd.reset(ioctl(vm, KVM_CREATE_VCPU, i));
    if (!v.fd.valid()) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_VCPU " + std::to_string(i)));
    void* run = mmap(nullptr, shell.run_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, v.fd.get(), 0);
    if (run == MAP_FAILED) throw VmmError(ErrorCode::kKvm, WithErrno("mmap kvm_run of vCPU " + std::to_string(i)));
    v.run = static_cast<kvm_run*>(run);
    shell.vcpus.push_back(std::move(v));
  }

  if (memory_bytes) {
    void* base = mmap(nullptr, memory_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) throw VmmError(ErrorCode::kMemoryBacking, WithErrno("reserving " + std::to_string(memory_bytes) + " bytes for guest RAM"));
    shell.memory = MemoryReservation(static_cast<uint8_t*>(base), memory_bytes);
    uint32_t slot = 0;
    for (const auto& r : SplitAtMmioHole(memory_bytes, shell.memory.base())) {
      kvm_userspace_memory_region region{slot++, 0, r.guest_addr, r.size, reinterpret_cast<uint64_t>(r.host_addr)};
      if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_USER_MEMORY_REGION for slot " + std::to_string(region.slot)));
    }
    shell.ram_slots_base = shell.memory.base();
  }
  return shell;
}

}  // namespace stencil
