#include "boot_params.h"

#include <algorithm>
#include <cstring>

#include "../../error.h"
#include "layout.h"

namespace stencil::x86 {

namespace {
template <typename T>
void Put(std::vector<uint8_t>& page, uint32_t off, T value) {
  std::memcpy(page.data() + off, &value, sizeof(T));
}
}  // namespace

std::vector<E820Entry> BuildE820(const std::vector<MemoryRegion>& regions) {
  std::vector<E820Entry> map;
  map.push_back({0, kEbdaAddr, kE820Ram});
  map.push_back({kEbdaAddr, kBiosRomStart - kEbdaAddr, kE820Reserved});
  map.push_back({kBiosRomStart, kHighMemStart - kBiosRomStart, kE820Reserved});
  for (const auto& r : regions) {
    uint64_t start = std::max<uint64_t>(r.guest_addr, kHighMemStart);
    uint64_t end = r.guest_addr + r.size;
    if (end > start) map.push_back({start, end - start, kE820Ram});
  }
  return map;
}

std::vector<uint8_t> BuildZeroPage(const BootParamsInput& in) {
  std::vector<uint8_t> page(zp::kSize, 0);
  const KernelImage& k = *in.kernel;
  if (!k.setup_header.empty()) {
    // bzImage: start from the kernel's own setup header, then fill in the loader's fields.
    std::memcpy(page.data() + zp::kSetupHeader, k.setup_header.data(),
                std::min<size_t>(k.setup_header.size(), zp::kE820Table - zp::kSetupHeader));
  } else {
    Put<uint16_t>(page, zp::kBootFlag, 0xaa55);
    Put<uint32_t>(page, zp::kHeaderMagic, 0x53726448);  // "HdrS"
    Put<uint16_t>(page, zp::kVersion, 0x020f);
    Put<uint32_t>(page, zp::kKernelAlignment, 0x1000000);
  }
  Put<uint64_t>(page, zp::kAcpiRsdpAddr, in.acpi_rsdp_addr);
  Put<uint8_t>(page, zp::kTypeOfLoader, 0xff);  // "undefined" loader
  Put<uint8_t>(page, zp::kLoadFlags, page[zp::kLoadFlags] | 0x01 /*LOADED_HIGH*/);
  Put<uint32_t>(page, zp::kCmdLinePtr, static_cast<uint32_t>(in.cmdline_addr));
  Put<uint32_t>(page, zp::kExtCmdLinePtr, static_cast<uint32_t>(in.cmdline_addr >> 32));
  Put<uint32_t>(page, zp::kCmdlineSize, in.cmdline_len);
  Put<uint32_t>(page, zp::kRamdiskImage, static_cast<uint32_t>(in.initrd_addr));
  Put<uint32_t>(page, zp::kExtRamdiskImage, static_cast<uint32_t>(in.initrd_addr >> 32));
  Put<uint32_t>(page, zp::kRamdiskSize, static_cast<uint32_t>(in.initrd_size));
  Put<uint32_t>(page, zp::kExtRamdiskSize, static_cast<uint32_t>(in.initrd_size >> 32));
  if (in.e820.size() > zp::kE820MaxEntries)
    throw VmmError(ErrorCode::kInvalidArgument, "too many e820 entries: " + std::to_string(in.e820.size()));
  Put<uint8_t>(page, zp::kE820Entries, static_cast<uint8_t>(in.e820.size()));
  for (size_t i = 0; i < in.e820.size(); i++) {
    uint32_t off = zp::kE820Table + static_cast<uint32_t>(i) * 20;
    Put<uint64_t>(page, off, in.e820[i].addr);
    Put<uint64_t>(page, off + 8, in.e820[i].size);
    Put<uint32_t>(page, off + 16, in.e820[i].type);
  }
  return page;
}

uint64_t PlaceInitrd(uint64_t low_mem_end, uint64_t kernel_end, uint32_t initrd_addr_max, uint64_t size) {
  uint64_t top = std::min<uint64_t>(low_mem_end, uint64_t(initrd_addr_max) + 1);
  uint64_t aligned_kernel_end = (kernel_end + 0xfff) & ~0xfffULL;
  if (size > top || ((top - size) & ~0xfffULL) < aligned_kernel_end)
    throw VmmError(ErrorCode::kInvalidArgument, "initrd of " + std::to_string(size) +
                                                    " bytes does not fit in guest memory below " + std::to_string(top) +
                                                    " after the kernel (ends at " + std::to_string(kernel_end) +
                                                    "); give the VM more memory");
  return (top - size) & ~0xfffULL;
}

}  // namespace stencil::x86
