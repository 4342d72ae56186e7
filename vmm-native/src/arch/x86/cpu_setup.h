// Puts a vCPU straight into 64-bit long mode at the kernel's entry (no firmware): identity page
// tables, a flat GDT, long-mode control registers, boot MSRs, FPU and LAPIC LINT setup.
#pragma once
#include "../../kvm_headers.h"

#include <cstdint>
#include <vector>

#include "../../memory.h"

namespace stencil::x86 {

// Page tables (identity map of the low 4 GiB with 2 MiB pages) and the GDT, into guest memory.
void WriteLongModeTables(GuestMemory& mem);

// GDT entries as the guest sees them: null, 64-bit code (0x08), data (0x10), TSS (0x18).
std::vector<uint64_t> BootGdt();

// Register state of the boot vCPU: RIP=entry, RSI=zero page.
void SetupBootRegisters(int vcpu_fd, uint64_t entry, uint64_t zero_page);
// Control registers/segments/EFER for every vCPU (APs are woken by INIT/SIPI, but KVM wants
// sane sregs on all of them before the first KVM_RUN).
void SetupLongModeSregs(int vcpu_fd);
void SetupFpu(int vcpu_fd);
void SetupBootMsrs(int vcpu_fd);
// LINT0 = ExtINT (the PIC), LINT1 = NMI, as a BIOS would leave them.
void SetupLapic(int vcpu_fd);

}  // namespace stencil::x86
