// The smallest ACPI table set that lets the guest power itself off: RSDP -> XSDT -> FADT
// (hardware-reduced, with a sleep control register in port I/O) -> DSDT holding only \_S5,
// plus a MADT (with ACPI on, Linux ignores the MP table; with acpi=off the MP table is used).
#pragma once
#include <cstdint>
#include <vector>

namespace stencil::x86 {

constexpr uint64_t kAcpiTablesAddr = 0xe0000;  // inside the BIOS area Linux scans for the RSDP
constexpr uint16_t kSleepControlPort = 0x600;
constexpr uint16_t kSleepStatusPort = 0x601;
constexpr uint8_t kS5SleepType = 5;            // the SLP_TYP our \_S5 object advertises

// All tables laid out contiguously for guest address `base`; the RSDP is first.
std::vector<uint8_t> BuildAcpiTables(uint64_t base, uint32_t vcpu_count);

// Decodes a write to the sleep control register: true if it requests S5 (soft off).
bool IsPowerOffRequest(uint8_t sleep_control_value);

}  // namespace stencil::x86
