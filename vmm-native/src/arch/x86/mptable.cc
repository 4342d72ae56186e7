#include "mptable.h"

#include <cstring>

#include "../../error.h"
#include "layout.h"

namespace stencil::x86 {

namespace {

constexpr uint8_t kApicVersion = 0x14;
constexpr uint8_t kIoApicVersion = 0x11;

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes.insert(bytes.end(), b, b + sizeof(T));
  }
  void PutChars(const char* s, size_t n) { bytes.insert(bytes.end(), s, s + n); }
  std::vector<uint8_t> bytes;
};

uint8_t Checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++) sum += p[i];
  return static_cast<uint8_t>(-sum);
}

void IntSource(Writer& w, uint8_t type, uint8_t irq_type, uint8_t bus_irq, uint8_t dst_apic, uint8_t dst_pin) {
  w.Put<uint8_t>(type);
  w.Put<uint8_t>(irq_type);
  w.Put<uint16_t>(0);  // polarity/trigger conform to the bus (ISA: edge, active high)
  w.Put<uint8_t>(0);   // source bus id
  w.Put<uint8_t>(bus_irq);
  w.Put<uint8_t>(dst_apic);
  w.Put<uint8_t>(dst_pin);
}

}  // namespace

std::vector<uint8_t> BuildMpTable(uint32_t vcpu_count, uint32_t base_addr) {
  if (vcpu_count == 0 || vcpu_count > kMaxVcpus)
    throw VmmError(ErrorCode::kInvalidArgument,
                   "MP table supports 1.." + std::to_string(kMaxVcpus) + " vCPUs, not " + std::to_string(vcpu_count));
  const uint8_t ioapic_id = static_cast<uint8_t>(vcpu_count);
  constexpr uint32_t kFloatingSize = 16, kHeaderSize = 44;

  Writer entries;
  uint16_t count = 0;
  for (uint32_t i = 0; i < vcpu_count; i++, count++) {
    entries.Put<uint8_t>(0);  // processor
    entries.Put<uint8_t>(static_cast<uint8_t>(i));
    entries.Put<uint8_t>(kApicVersion);
    entries.Put<uint8_t>(0x1 | (i == 0 ? 0x2 : 0));  // enabled, BSP
    entries.Put<uint32_t>(0x600);                    // signature: family 6
    entries.Put<uint32_t>(0x201);                    // features: FPU, APIC
    entries.Put<uint64_t>(0);
  }
  entries.Put<uint8_t>(1);  // bus 0: ISA
  entries.Put<uint8_t>(0);
  entries.PutChars("ISA   ", 6);
  count++;
  entries.Put<uint8_t>(2);  // IOAPIC
  entries.Put<uint8_t>(ioapic_id);
  entries.Put<uint8_t>(kIoApicVersion);
  entries.Put<uint8_t>(1);
  entries.Put<uint32_t>(static_cast<uint32_t>(kIoApicAddr));
  count++;
  for (uint8_t irq = 0; irq <= kMaxIrq; irq++, count++) IntSource(entries, 3, 0 /*INT*/, irq, ioapic_id, irq);
  IntSource(entries, 4, 3 /*ExtINT*/, 0, 0xff, 0);  // LINT0 of all CPUs
  IntSource(entries, 4, 1 /*NMI*/, 0, 0xff, 1);     // LINT1 of all CPUs
  count += 2;

  Writer header;
  header.PutChars("PCMP", 4);
  header.Put<uint16_t>(static_cast<uint16_t>(kHeaderSize + entries.bytes.size()));
  header.Put<uint8_t>(4);  // spec revision 1.4
  header.Put<uint8_t>(0);  // checksum, filled below
  header.PutChars("STENCIL ", 8);
  header.PutChars("MICROVM     ", 12);
  header.Put<uint32_t>(0);
  header.Put<uint16_t>(0);
  header.Put<uint16_t>(count);
  header.Put<uint32_t>(static_cast<uint32_t>(kLapicAddr));
  header.Put<uint16_t>(0);
  header.Put<uint8_t>(0);
  header.Put<uint8_t>(0);
  std::vector<uint8_t> table = header.bytes;
  table.insert(table.end(), entries.bytes.begin(), entries.bytes.end());
  table[7] = Checksum(table.data(), table.size());

  Writer fp;
  fp.PutChars("_MP_", 4);
  fp.Put<uint32_t>(base_addr + kFloatingSize);
  fp.Put<uint8_t>(1);  // length in 16-byte units
  fp.Put<uint8_t>(4);
  fp.Put<uint8_t>(0);  // checksum
  for (int i = 0; i < 5; i++) fp.Put<uint8_t>(0);  // feature bytes: 0 = configuration table present
  fp.bytes[10] = Checksum(fp.bytes.data(), fp.bytes.size());

  std::vector<uint8_t> out = fp.bytes;
  out.insert(out.end(), table.begin(), table.end());
  return out;
}

}  // namespace stencil::x86
