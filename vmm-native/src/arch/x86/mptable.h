// Intel MultiProcessor Specification 1.4 table: tells the guest how many CPUs there are and how
// ISA IRQs reach the IOAPIC. With no ACPI MADT, Linux finds SMP through this.
#pragma once
#include <cstdint>
#include <vector>

namespace stencil::x86 {

// APIC IDs are 8-bit, 255 is the broadcast ID and the IOAPIC takes the ID after the last CPU's:
// the most vCPUs a VM can have (Vm checks it, naming the field).
constexpr uint32_t kMaxVcpus = 254;

// The floating pointer followed by the configuration table, ready to copy to `base_addr`.
std::vector<uint8_t> BuildMpTable(uint32_t vcpu_count, uint32_t base_addr);

}  // namespace stencil::x86
