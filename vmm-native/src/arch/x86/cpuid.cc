#include "cpuid.h"

#include <sys/ioctl.h>

#include <cerrno>

#include "../../error.h"

namespace stencil::x86 {

namespace {
constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheTopology = 0x4;
constexpr uint32_t kLeafThermal = 0x6;
constexpr uint32_t kLeafPerfMon = 0xa;
constexpr uint32_t kLeafExtTopology = 0xb;
constexpr uint32_t kLeafAmdSizeIds = 0x80000008;
constexpr uint32_t kLeafAmdFeatures = 0x80000001;
constexpr uint32_t kLeafSvm = 0x8000000a;

constexpr uint32_t kEcxHypervisor = 1u << 31;
constexpr uint32_t kEcxTscDeadline = 1u << 24;
constexpr uint32_t kEdxHtt = 1u << 28;
constexpr uint32_t kEcxVmx = 1u << 5;      // leaf 1
constexpr uint32_t kEcxSvm = 1u << 2;      // leaf 0x80000001

uint32_t BitsFor(uint32_t n) {
  uint32_t bits = 0;
  while ((1u << bits) < n) bits++;
  return bits;
}
}  // namespace

std::vector<kvm_cpuid_entry2> FilterCpuid(const std::vector<kvm_cpuid_entry2>& supported, uint32_t vcpu_index,
                                          uint32_t vcpu_count) {
  std::vector<kvm_cpuid_entry2> out;
  for (kvm_cpuid_entry2 e : supported) {
    switch (e.function) {
      case kLeafFeatures:
        e.ebx = (e.ebx & 0x0000ffff) | (vcpu_index << 24) | ((vcpu_count & 0xff) << 16);
        e.ecx |= kEcxHypervisor | kEcxTscDeadline;  // the in-kernel LAPIC emulates the deadline timer
        e.ecx &= ~kEcxVmx;  // no nested virtualization inside pod VMs (see kLeafSvm)
        if (vcpu_count > 1) e.edx |= kEdxHtt; else e.edx &= ~kEdxHtt;
        break;
      case kLeafCacheTopology:
        // Cores per package - 1 in EAX[31:26]; one package holds all vCPUs.
        e.eax = (e.eax & 0x03ffffff) | ((vcpu_count - 1) << 26);
        break;
      case kLeafThermal:
      case kLeafPerfMon:
        e.eax = e.ebx = e.ecx = e.edx = 0;  // no thermal sensors, no PMU
        break;
      case kLeafExtTopology:
        // Level 0 = SMT (1 thread per core), level 1 = core (all vCPUs in one package).
        if (e.index == 0) {
          e.eax = 0; e.ebx = 1; e.ecx = (1u << 8) | e.index;
        } else if (e.index == 1) {
          e.eax = BitsFor(vcpu_count); e.ebx = vcpu_count; e.ecx = (2u << 8) | e.index;
        } else {
          e.eax = e.ebx = 0; e.ecx = e.index;
        }
        e.edx = vcpu_index;
        break;
      case kLeafAmdFeatures:
        // Pod VMs run containers, not hypervisors: hiding VMX/SVM keeps the guest's KVM (built in
        // for the emulated-host role) from enabling virtualization on every CPU at boot.
        e.ecx &= ~kEcxSvm;
        break;
      case kLeafSvm:
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case kLeafAmdSizeIds:
        e.ecx = (e.ecx & ~0xffu) | ((vcpu_count - 1) & 0xff);
        break;
      default:
        break;
    }
    out.push_back(e);
  }
  return out;
}

std::vector<kvm_cpuid_entry2> SupportedCpuid(int kvm_fd) {
  for (uint32_t n = 128; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2), 0);
    auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
    c->nent = n;
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) return {c->entries, c->entries + c->nent};
    if (errno != E2BIG) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_GET_SUPPORTED_CPUID"));
  }
  throw VmmError(ErrorCode::kKvm, "KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

void SetCpuid(int vcpu_fd, const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + entries.size() * sizeof(kvm_cpuid_entry2), 0);
  auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
  c->nent = static_cast<uint32_t>(entries.size());
  for (size_t i = 0; i < entries.size(); i++) c->entries[i] = entries[i];
  if (ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_CPUID2"));
}

}  // namespace stencil::x86
