// Boot structures: zero-page layout, e820 map, initrd placement, MP table and ACPI checksums.
#include <gtest/gtest.h>

#include <cstring>

#include "../src/arch/x86/acpi.h"
#include "../src/arch/x86/boot_params.h"
#include "../src/arch/x86/cpuid.h"
#include "../src/arch/x86/layout.h"
#include "../src/arch/x86/mptable.h"
#include "../src/error.h"

using namespace stencil;
using namespace stencil::x86;

namespace {
template <typename T>
T Get(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
uint8_t Sum(const uint8_t* p, size_t n) {
  uint8_t s = 0;
  for (size_t i = 0; i < n; i++) s += p[i];
  return s;
}
}  // namespace

TEST(BootParams, ZeroPageFieldsAtProtocolOffsets) {
  KernelImage k{KernelImage::Format::kElf, {}, 0x1000000, 0x2000000, {}};
  BootParamsInput in{&k, 0x20000, 12, 0x7000000, 0x1234, {{0, 0x9fc00, kE820Ram}, {0x100000, 0x100000, kE820Ram}}};
  in.acpi_rsdp_addr = 0xe0000;
  auto page = BuildZeroPage(in);
  ASSERT_EQ(page.size(), 4096u);
  EXPECT_EQ(Get<uint16_t>(page, 0x1fe), 0xaa55);
  EXPECT_EQ(Get<uint32_t>(page, 0x202), 0x53726448u);  // "HdrS"
  EXPECT_EQ(page[0x210], 0xff);                          // type_of_loader
  EXPECT_EQ(page[0x211] & 1, 1);                         // LOADED_HIGH
  EXPECT_EQ(Get<uint32_t>(page, 0x228), 0x20000u);       // cmd_line_ptr
  EXPECT_EQ(Get<uint32_t>(page, 0x238), 12u);            // cmdline_size
  EXPECT_EQ(Get<uint32_t>(page, 0x218), 0x7000000u);     // ramdisk_image
  EXPECT_EQ(Get<uint32_t>(page, 0x21c), 0x1234u);        // ramdisk_size
  EXPECT_EQ(Get<uint64_t>(page, 0x070), 0xe0000u);       // acpi_rsdp_addr
  EXPECT_EQ(page[0x1e8], 2);                             // e820_entries
  EXPECT_EQ(Get<uint64_t>(page, 0x2d0 + 20), 0x100000u);
  EXPECT_EQ(Get<uint64_t>(page, 0x2d0 + 28), 0x100000u);
  EXPECT_EQ(Get<uint32_t>(page, 0x2d0 + 36), 1u);
}

TEST(BootParams, BzImageHeaderIsCopied) {
  KernelImage k{KernelImage::Format::kBzImage, {}, 0x100200, 0x400000, std::vector<uint8_t>(0x70, 0)};
  k.setup_header[0x1fe - 0x1f1] = 0x55;
  k.setup_header[0x1ff - 0x1f1] = 0xaa;
  k.setup_header[0x206 - 0x1f1] = 0x0f;  // version 2.15 low byte
  auto page = BuildZeroPage({&k, 0x20000, 1});
  EXPECT_EQ(Get<uint16_t>(page, 0x1fe), 0xaa55);
  EXPECT_EQ(page[0x206], 0x0f);
}

TEST(BootParams, E820SkipsLegacyHoleAndSplitsAtMmioHole) {
  std::vector<MemoryRegion> regions{{0, kMmioHoleStart, nullptr, 0}, {kMmioHoleEnd, 1ull << 30, nullptr, 0}};
  auto map = BuildE820(regions);
  ASSERT_EQ(map.size(), 5u);
  EXPECT_EQ(map[0].addr, 0u);
  EXPECT_EQ(map[0].size, kEbdaAddr);
  EXPECT_EQ(map[1].type, kE820Reserved);
  EXPECT_EQ(map[3].addr, kHighMemStart);
  EXPECT_EQ(map[3].addr + map[3].size, kMmioHoleStart);
  EXPECT_EQ(map[4].addr, kMmioHoleEnd);
  EXPECT_EQ(map[4].type, kE820Ram);
}

TEST(BootParams, InitrdGoesHighAndAligned) {
  uint64_t addr = PlaceInitrd(256 << 20, 0x2000000, 0x7fffffff, 5000);
  EXPECT_EQ(addr % 4096, 0u);
  EXPECT_LE(addr + 5000, 256u << 20);
  EXPECT_GT(addr, (256u << 20) - 3 * 4096);
  EXPECT_THROW(PlaceInitrd(64 << 20, 60 << 20, 0x7fffffff, 8 << 20), VmmError);
}

TEST(MpTable, ChecksumsAndCpuEntries) {
  auto t = BuildMpTable(4, kEbdaAddr);
  ASSERT_GE(t.size(), 16u + 44u);
  EXPECT_EQ(std::memcmp(t.data(), "_MP_", 4), 0);
  EXPECT_EQ(Sum(t.data(), 16), 0);
  EXPECT_EQ(Get<uint32_t>(t, 4), kEbdaAddr + 16);
  const uint8_t* cfg = t.data() + 16;
  EXPECT_EQ(std::memcmp(cfg, "PCMP", 4), 0);
  uint16_t len = Get<uint16_t>(t, 16 + 4);
  EXPECT_EQ(16u + len, t.size());
  EXPECT_EQ(Sum(cfg, len), 0);
  int cpus = 0, bsp = 0;
  for (size_t off = 16 + 44; off < t.size();) {
    uint8_t type = t[off];
    if (type == 0) {
      cpus++;
      if (t[off + 3] & 2) bsp++;
      off += 20;
    } else {
      off += 8;
    }
  }
  EXPECT_EQ(cpus, 4);
  EXPECT_EQ(bsp, 1);
  EXPECT_THROW(BuildMpTable(0, kEbdaAddr), VmmError);
}

TEST(Acpi, TablesAreFoundAndChecksummed) {
  auto t = BuildAcpiTables(kAcpiTablesAddr, 3);
  EXPECT_EQ(std::memcmp(t.data(), "RSD PTR ", 8), 0);
  EXPECT_EQ(Sum(t.data(), 20), 0);
  EXPECT_EQ(Sum(t.data(), 36), 0);
  uint64_t xsdt = Get<uint64_t>(t, 24) - kAcpiTablesAddr;
  EXPECT_EQ(std::memcmp(t.data() + xsdt, "XSDT", 4), 0);
  EXPECT_EQ(Sum(t.data() + xsdt, Get<uint32_t>(t, xsdt + 4)), 0);
  uint64_t fadt = Get<uint64_t>(t, xsdt + 36) - kAcpiTablesAddr;
  EXPECT_EQ(std::memcmp(t.data() + fadt, "FACP", 4), 0);
  EXPECT_EQ(Sum(t.data() + fadt, Get<uint32_t>(t, fadt + 4)), 0);
  EXPECT_FALSE(Get<uint32_t>(t, fadt + 112) & (1u << 20));  // not hardware-reduced: keeps ISA IRQs
  EXPECT_EQ(Get<uint32_t>(t, fadt + 64), kPm1ControlPort);
  EXPECT_EQ(Get<uint64_t>(t, fadt + 172 + 4), kPm1ControlPort);
  uint64_t facs = Get<uint32_t>(t, fadt + 36) - kAcpiTablesAddr;
  EXPECT_EQ(facs % 64, 0u);
  EXPECT_EQ(std::memcmp(t.data() + facs, "FACS", 4), 0);
  uint64_t dsdt = Get<uint64_t>(t, fadt + 140) - kAcpiTablesAddr;
  EXPECT_EQ(std::memcmp(t.data() + dsdt, "DSDT", 4), 0);
  EXPECT_EQ(Sum(t.data() + dsdt, Get<uint32_t>(t, dsdt + 4)), 0);
  uint64_t madt = Get<uint64_t>(t, xsdt + 44) - kAcpiTablesAddr;
  EXPECT_EQ(std::memcmp(t.data() + madt, "APIC", 4), 0);
  uint32_t madt_len = Get<uint32_t>(t, madt + 4);
  EXPECT_EQ(Sum(t.data() + madt, madt_len), 0);
  int lapics = 0, ioapics = 0;
  for (uint64_t off = madt + 44; off < madt + madt_len; off += t[off + 1]) {
    ASSERT_GT(t[off + 1], 0);
    lapics += t[off] == 0;
    ioapics += t[off] == 1;
  }
  EXPECT_EQ(lapics, 3);
  EXPECT_EQ(ioapics, 1);
}

TEST(Acpi, SleepControlDecoding) {
  EXPECT_TRUE(IsPowerOffRequest((kS5SleepType << 10) | 0x2000));
  EXPECT_FALSE(IsPowerOffRequest(kS5SleepType << 10));   // SLP_EN missing
  EXPECT_FALSE(IsPowerOffRequest((3 << 10) | 0x2000));   // S3 is not power-off
}

TEST(Cpuid, TopologyAndHiddenVirtualization) {
  std::vector<kvm_cpuid_entry2> supported(4);
  supported[0].function = 1;
  supported[0].ecx = 1u << 5;  // VMX
  supported[1].function = 0x80000001;
  supported[1].ecx = 1u << 2;  // SVM
  supported[2].function = 0x8000000a;
  supported[2].eax = 1;
  supported[3].function = 0xb;
  supported[3].index = 1;
  auto out = FilterCpuid(supported, 2, 4);
  EXPECT_EQ(out[0].ebx >> 24, 2u);                 // APIC ID
  EXPECT_EQ((out[0].ebx >> 16) & 0xff, 4u);        // logical processors
  EXPECT_TRUE(out[0].ecx & (1u << 31));            // hypervisor present
  EXPECT_FALSE(out[0].ecx & (1u << 5));            // no VMX
  EXPECT_FALSE(out[1].ecx & (1u << 2));            // no SVM
  EXPECT_EQ(out[2].eax, 0u);
  EXPECT_EQ(out[3].ebx, 4u);                       // 4 logical CPUs at the core level
  EXPECT_EQ(out[3].edx, 2u);                       // x2APIC ID
}
