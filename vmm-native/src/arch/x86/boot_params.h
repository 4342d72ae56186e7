// The Linux x86 boot protocol "zero page" (struct boot_params), written by offset so the layout
// is explicit and unit-tested. Offsets follow Documentation/x86/zero-page.rst and boot.rst.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../../loader/kernel_image.h"
#include "../../memory.h"

namespace stencil::x86 {

namespace zp {
constexpr uint32_t kAcpiRsdpAddr = 0x070;
constexpr uint32_t kExtRamdiskImage = 0x0c0;
constexpr uint32_t kExtRamdiskSize = 0x0c4;
constexpr uint32_t kExtCmdLinePtr = 0x0c8;
constexpr uint32_t kE820Entries = 0x1e8;
constexpr uint32_t kSetupHeader = 0x1f1;
constexpr uint32_t kBootFlag = 0x1fe;
constexpr uint32_t kHeaderMagic = 0x202;
constexpr uint32_t kVersion = 0x206;
constexpr uint32_t kTypeOfLoader = 0x210;
constexpr uint32_t kLoadFlags = 0x211;
constexpr uint32_t kRamdiskImage = 0x218;
constexpr uint32_t kRamdiskSize = 0x21c;
constexpr uint32_t kCmdLinePtr = 0x228;
constexpr uint32_t kKernelAlignment = 0x230;
constexpr uint32_t kCmdlineSize = 0x238;
constexpr uint32_t kE820Table = 0x2d0;
constexpr uint32_t kE820MaxEntries = 128;
constexpr uint32_t kSize = 4096;
}  // namespace zp

enum E820Type : uint32_t { kE820Ram = 1, kE820Reserved = 2 };
struct E820Entry {
  uint64_t addr, size;
  uint32_t type;
};

// RAM map for the guest: low RAM minus EBDA/BIOS area, then the regions of guest memory.
std::vector<E820Entry> BuildE820(const std::vector<MemoryRegion>& regions);

struct BootParamsInput {
  const KernelImage* kernel;
  uint64_t cmdline_addr;
  uint32_t cmdline_len;  // including the NUL
  uint64_t initrd_addr = 0;
  uint64_t initrd_size = 0;
  std::vector<E820Entry> e820;
  uint64_t acpi_rsdp_addr = 0;
};

std::vector<uint8_t> BuildZeroPage(const BootParamsInput& in);

// Where to put an initrd of `size` bytes: page-aligned, as high as allowed, above the kernel.
// Throws VmmError if it does not fit.
uint64_t PlaceInitrd(uint64_t low_mem_end, uint64_t kernel_end, uint32_t initrd_addr_max, uint64_t size);

}  // namespace stencil::x86
