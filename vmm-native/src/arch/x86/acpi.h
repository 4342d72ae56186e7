// The smallest ACPI table set that lets the guest power itself off: RSDP -> XSDT -> FADT (with
// PM1 event/control registers in port I/O, and a FACS) -> DSDT holding only \_S5, plus a MADT
// (with ACPI on, Linux ignores the MP table; with acpi=off the MP table is used).
// Not "hardware-reduced" ACPI on purpose: Linux drops the legacy PIC and the ISA IRQs (serial
// on 4, virtio-mmio from 5) in that mode unless every device is described in AML.
#pragma once
#include <cstdint>
#include <vector>

namespace stencil::x86 {

constexpr uint64_t kAcpiTablesAddr = 0xe0000;  // inside the BIOS area Linux scans for the RSDP
constexpr uint16_t kPm1EventPort = 0x600;    // PM1a status (2 bytes) + enable (2 bytes)
constexpr uint16_t kPm1ControlPort = 0x604;  // PM1a control (2 bytes)
constexpr uint16_t kPmPortsSize = 6;
constexpr uint16_t kSciIrq = 9;
constexpr uint8_t kS5SleepType = 5;          // the SLP_TYP our \_S5 object advertises

// All tables laid out contiguously for guest address `base`; the RSDP is first.
std::vector<uint8_t> BuildAcpiTables(uint64_t base, uint32_t vcpu_count);

// Decodes a write to the PM1 control register: true if it requests S5 (soft off).
bool IsPowerOffRequest(uint16_t pm1_control_value);

}  // namespace stencil::x86
