#include "acpi.h"

#include <cstring>
#include <string>

#include "layout.h"

namespace stencil::x86 {

namespace {

constexpr uint32_t kHeaderSize = 36;
constexpr uint32_t kFadtSize = 276;   // FADT revision 6
constexpr uint32_t kFacsSize = 64;
constexpr uint32_t kFadtFlagsWbinvd = 1u << 0, kFadtFlagsPowerButtonIsGeneric = 1u << 4, kFadtFlagsNoRtcWake = 1u << 5;
constexpr uint16_t kIapcNoVga = 1u << 2, kIapcNoCmosRtc = 1u << 5;
constexpr uint16_t kSleepEnable = 1u << 13;
constexpr uint16_t kSleepTypeShift = 10, kSleepTypeMask = 0x1c00;

// AML: Name (\_S5, Package (2) { 5, 0 })
const uint8_t kDsdtAml[] = {0x08, '_', 'S', '5', '_', 0x12, 0x05, 0x02, 0x0a, kS5SleepType, 0x00};

template <typename T>
void Put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}

uint8_t Checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++) sum += p[i];
  return static_cast<uint8_t>(-sum);
}

std::vector<uint8_t> Table(const char sig[4], uint32_t length, uint8_t revision) {
  std::vector<uint8_t> t(length, 0);
  std::memcpy(t.data(), sig, 4);
  Put<uint32_t>(t, 4, length);
  t[8] = revision;
  std::memcpy(t.data() + 10, "STENCL", 6);
  std::memcpy(t.data() + 16, "STENCILV", 8);
  Put<uint32_t>(t, 24, 1);
  std::memcpy(t.data() + 28, "STNC", 4);
  Put<uint32_t>(t, 32, 1);
  return t;
}

void Seal(std::vector<uint8_t>& t) { t[9] = Checksum(t.data(), t.size()); }

// Generic Address Structure for a port I/O register block accessed in 16-bit words.
void PutIoGas(std::vector<uint8_t>& t, size_t off, uint16_t port, uint8_t bit_width) {
  t[off] = 1;              // system I/O space
  t[off + 1] = bit_width;
  t[off + 2] = 0;          // bit offset
  t[off + 3] = 2;          // word access
  Put<uint64_t>(t, off + 4, port);
}


// MADT: one local APIC per vCPU, the IOAPIC (GSIs 0-23, ISA IRQs identity-mapped), LINT1 = NMI.
std::vector<uint8_t> BuildMadt(uint32_t vcpu_count) {
  const uint32_t length = kHeaderSize + 8 + vcpu_count * 8 + 12 + 6;
  std::vector<uint8_t> t = Table("APIC", length, 4);
  Put<uint32_t>(t, 36, static_cast<uint32_t>(kLapicAddr));
  Put<uint32_t>(t, 40, 1);  // PCAT_COMPAT: the (in-kernel) 8259 PICs exist
  size_t off = kHeaderSize + 8;
  for (uint32_t i = 0; i < vcpu_count; i++, off += 8) {
    t[off] = 0;  // processor local APIC
    t[off + 1] = 8;
    t[off + 2] = static_cast<uint8_t>(i);  // ACPI processor UID
    t[off + 3] = static_cast<uint8_t>(i);  // APIC ID
    Put<uint32_t>(t, off + 4, 1);          // enabled
  }
  t[off] = 1;  // I/O APIC
  t[off + 1] = 12;
  t[off + 2] = static_cast<uint8_t>(vcpu_count);  // IOAPIC ID follows the CPUs', as in the MP table
  Put<uint32_t>(t, off + 4, static_cast<uint32_t>(kIoApicAddr));
  Put<uint32_t>(t, off + 8, 0);  // GSI base
  off += 12;
  t[off] = 4;  // local APIC NMI
  t[off + 1] = 6;
  t[off + 2] = 0xff;              // all processors
  Put<uint16_t>(t, off + 3, 0);   // bus-conforming polarity/trigger
  t[off + 5] = 1;                 // LINT1
  Seal(t);
  return t;
}

}  // namespace

std::vector<uint8_t> BuildAcpiTables(uint64_t base, uint32_t vcpu_count) {
  constexpr uint32_t kRsdpSize = 36;
  auto align = [](uint64_t v) { return (v + 15) & ~15ULL; };
  std::vector<uint8_t> madt = BuildMadt(vcpu_count);
  const uint64_t facs_addr = base + 0x40;  // 64-byte aligned
  const uint64_t xsdt_addr = facs_addr + kFacsSize;
  const uint64_t fadt_addr = align(xsdt_addr + kHeaderSize + 16);
  const uint64_t dsdt_addr = align(fadt_addr + kFadtSize);
  const uint64_t madt_addr = align(dsdt_addr + kHeaderSize + sizeof kDsdtAml);

  std::vector<uint8_t> dsdt = Table("DSDT", kHeaderSize + sizeof kDsdtAml, 2);
  std::memcpy(dsdt.data() + kHeaderSize, kDsdtAml, sizeof kDsdtAml);
  Seal(dsdt);

  std::vector<uint8_t> facs(kFacsSize, 0);
  std::memcpy(facs.data(), "FACS", 4);
  Put<uint32_t>(facs, 4, kFacsSize);
  facs[32] = 2;  // version

  // SMI_CMD = 0: the platform is always in ACPI mode, no SMM hand-over.
  std::vector<uint8_t> fadt = Table("FACP", kFadtSize, 6);
  Put<uint32_t>(fadt, 36, static_cast<uint32_t>(facs_addr));
  Put<uint32_t>(fadt, 40, static_cast<uint32_t>(dsdt_addr));
  Put<uint16_t>(fadt, 46, kSciIrq);
  Put<uint32_t>(fadt, 56, kPm1EventPort);
  Put<uint32_t>(fadt, 64, kPm1ControlPort);
  fadt[88] = 4;  // PM1_EVT_LEN
  fadt[89] = 2;  // PM1_CNT_LEN
  Put<uint16_t>(fadt, 109, kIapcNoVga | kIapcNoCmosRtc);
  Put<uint32_t>(fadt, 112, kFadtFlagsWbinvd | kFadtFlagsPowerButtonIsGeneric | kFadtFlagsNoRtcWake);
  fadt[131] = 5;  // FADT minor version (6.5)
  Put<uint64_t>(fadt, 132, facs_addr);
  Put<uint64_t>(fadt, 140, dsdt_addr);
  PutIoGas(fadt, 148, kPm1EventPort, 32);
  PutIoGas(fadt, 172, kPm1ControlPort, 16);
  Put<uint64_t>(fadt, 268, 0x4c49434e455453ULL);  // hypervisor vendor identity "STENCIL"
  Seal(fadt);

  std::vector<uint8_t> xsdt = Table("XSDT", kHeaderSize + 16, 1);
  Put<uint64_t>(xsdt, kHeaderSize, fadt_addr);
  Put<uint64_t>(xsdt, kHeaderSize + 8, madt_addr);
  Seal(xsdt);

  std::vector<uint8_t> rsdp(kRsdpSize, 0);
  std::memcpy(rsdp.data(), "RSD PTR ", 8);
  std::memcpy(rsdp.data() + 9, "STENCL", 6);
  rsdp[15] = 2;  // ACPI 2.0+
  Put<uint32_t>(rsdp, 20, kRsdpSize);
  Put<uint64_t>(rsdp, 24, xsdt_addr);
  rsdp[8] = Checksum(rsdp.data(), 20);
  rsdp[32] = Checksum(rsdp.data(), kRsdpSize);

  std::vector<uint8_t> out(madt_addr - base + madt.size(), 0);
  std::memcpy(out.data(), rsdp.data(), rsdp.size());
  std::memcpy(out.data() + (facs_addr - base), facs.data(), facs.size());
  std::memcpy(out.data() + (xsdt_addr - base), xsdt.data(), xsdt.size());
  std::memcpy(out.data() + (fadt_addr - base), fadt.data(), fadt.size());
  std::memcpy(out.data() + (dsdt_addr - base), dsdt.data(), dsdt.size());
  std::memcpy(out.data() + (madt_addr - base), madt.data(), madt.size());
  return out;
}

bool IsPowerOffRequest(uint16_t value) {
  return (value & kSleepEnable) && ((value & kSleepTypeMask) >> kSleepTypeShift) == kS5SleepType;
}

}  // namespace stencil::x86
