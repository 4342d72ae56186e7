// The CPUID a vCPU reports: what KVM supports, with the topology made consistent for N vCPUs
// and features we do not virtualize (PMU, thermal/power management) hidden.
#pragma once
#include "../../kvm_headers.h"

#include <cstdint>
#include <vector>

namespace stencil::x86 {

std::vector<kvm_cpuid_entry2> FilterCpuid(const std::vector<kvm_cpuid_entry2>& supported, uint32_t vcpu_index,
                                          uint32_t vcpu_count);

// KVM_GET_SUPPORTED_CPUID on the /dev/kvm fd.
std::vector<kvm_cpuid_entry2> SupportedCpuid(int kvm_fd);
void SetCpuid(int vcpu_fd, const std::vector<kvm_cpuid_entry2>& entries);

}  // namespace stencil::x86
