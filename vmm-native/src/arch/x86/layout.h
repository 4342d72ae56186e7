// Guest-physical addresses of the structures the VMM writes before the first instruction.
// Everything sits in low memory below 1 MiB except the kernel and initrd.
#pragma once
#include <cstdint>

namespace stencil::x86 {

constexpr uint64_t kGdtAddr = 0x500;
constexpr uint64_t kIdtAddr = 0x520;
constexpr uint64_t kZeroPageAddr = 0x7000;   // struct boot_params
constexpr uint64_t kBootStackTop = 0x8ff0;
constexpr uint64_t kPml4Addr = 0x9000;
constexpr uint64_t kPdptAddr = 0xa000;
constexpr uint64_t kPdAddr = 0xb000;         // 4 page directories: identity map of 4 GiB
constexpr uint64_t kCmdlineAddr = 0x20000;
constexpr uint64_t kCmdlineMax = 0x10000;
constexpr uint64_t kEbdaAddr = 0x9fc00;      // MP table lives here (Linux scans the EBDA)
constexpr uint64_t kBiosRomStart = 0xe0000;  // reserved up to 1 MiB
constexpr uint64_t kHighMemStart = 0x100000;

constexpr uint64_t kIoApicAddr = 0xfec00000;
constexpr uint64_t kLapicAddr = 0xfee00000;
constexpr uint64_t kTssAddr = 0xfffbd000;     // KVM_SET_TSS_ADDR (3 pages), Intel only
constexpr uint64_t kIdentityMapAddr = 0xfffbc000;

constexpr uint64_t kVirtioMmioBase = 0xd0000000;
constexpr uint64_t kVirtioMmioSize = 0x1000;
constexpr uint32_t kSerialIrq = 4;
constexpr uint32_t kFirstVirtioIrq = 5;
constexpr uint32_t kMaxIrq = 23;  // IOAPIC pins

}  // namespace stencil::x86
