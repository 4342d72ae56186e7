#include "cpu_setup.h"

#include <sys/ioctl.h>

#include <cstring>
#include <vector>

#include "../../error.h"
#include "../../kvm.h"
#include "layout.h"

namespace stencil::x86 {

namespace {

constexpr uint64_t kCr0Pe = 1ULL << 0, kCr0Et = 1ULL << 4, kCr0Pg = 1ULL << 31;
constexpr uint64_t kCr4Pae = 1ULL << 5;
constexpr uint64_t kEferLme = 1ULL << 8, kEferLma = 1ULL << 10;


// Decodes a GDT descriptor into KVM's segment form.
kvm_segment SegmentFromGdt(uint64_t entry, uint16_t index) {
  kvm_segment s{};
  s.base = ((entry >> 16) & 0xffffff) | (((entry >> 56) & 0xff) << 24);
  uint32_t limit = (entry & 0xffff) | (((entry >> 48) & 0xf) << 16);
  s.g = (entry >> 55) & 1;
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.selector = index * 8;
  s.type = (entry >> 40) & 0xf;
  s.s = (entry >> 44) & 1;
  s.dpl = (entry >> 45) & 3;
  s.present = (entry >> 47) & 1;
  s.avl = (entry >> 52) & 1;
  s.l = (entry >> 53) & 1;
  s.db = (entry >> 54) & 1;
  s.unusable = s.present ? 0 : 1;
  return s;
}

uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t(base) & 0xff000000) << 32) | ((uint64_t(base) & 0x00ffffff) << 16) |
         (uint64_t(limit) & 0xffff) | ((uint64_t(limit) & 0xf0000) << 32) | (uint64_t(flags & 0xf0ff) << 40);
}

}  // namespace

std::vector<uint64_t> BootGdt() {
  return {
      0,
      GdtEntry(0xa09b, 0, 0xfffff),  // code: present, DPL0, exec/read, L=1, G=1
      GdtEntry(0xc093, 0, 0xfffff),  // data: present, DPL0, read/write, D/B=1, G=1
      GdtEntry(0x808b, 0, 0xfffff),  // TSS: present, busy 64-bit TSS
  };
}

void WriteLongModeTables(GuestMemory& mem) {
  auto gdt = BootGdt();
  mem.Write(kGdtAddr, gdt.data(), gdt.size() * sizeof(uint64_t));
  uint64_t zero_idt = 0;
  mem.Write(kIdtAddr, &zero_idt, sizeof zero_idt);

  uint64_t pml4e = kPdptAddr | 0x3;  // present | writable
  mem.Write(kPml4Addr, &pml4e, sizeof pml4e);
  for (uint64_t i = 0; i < 4; i++) {
    uint64_t pdpte = (kPdAddr + i * 0x1000) | 0x3;
    mem.Write(kPdptAddr + i * 8, &pdpte, sizeof pdpte);
  }
  std::vector<uint64_t> pd(512 * 4);
  for (uint64_t i = 0; i < pd.size(); i++) pd[i] = (i << 21) | 0x83;  // present | writable | 2 MiB page
  mem.Write(kPdAddr, pd.data(), pd.size() * sizeof(uint64_t));
}

void SetupLongModeSregs(int vcpu_fd) {
  kvm_sregs sregs{};
  CheckedIoctl(vcpu_fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
  auto gdt = BootGdt();
  sregs.gdt.base = kGdtAddr;
  sregs.gdt.limit = static_cast<uint16_t>(gdt.size() * 8 - 1);
  sregs.idt.base = kIdtAddr;
  sregs.idt.limit = 7;
  sregs.cs = SegmentFromGdt(gdt[1], 1);
  kvm_segment data = SegmentFromGdt(gdt[2], 2);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.tr = SegmentFromGdt(gdt[3], 3);
  sregs.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
  sregs.cr3 = kPml4Addr;
  sregs.cr4 = kCr4Pae;
  sregs.efer = kEferLme | kEferLma;
  CheckedIoctl(vcpu_fd, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
}

void SetupBootRegisters(int vcpu_fd, uint64_t entry, uint64_t zero_page) {
  kvm_regs regs{};
  regs.rflags = 0x2;  // bit 1 is reserved-as-one
  regs.rip = entry;
  regs.rsp = regs.rbp = kBootStackTop;
  regs.rsi = zero_page;  // the 64-bit boot protocol passes boot_params in RSI
  CheckedIoctl(vcpu_fd, KVM_SET_REGS, &regs, "KVM_SET_REGS");
}

void SetupFpu(int vcpu_fd) {
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;      // x87 default control word
  fpu.mxcsr = 0x1f80;   // SSE: all exceptions masked
  CheckedIoctl(vcpu_fd, KVM_SET_FPU, &fpu, "KVM_SET_FPU");
}

void SetupBootMsrs(int vcpu_fd) {
  const std::pair<uint32_t, uint64_t> msrs[] = {
      {0x174, 0}, {0x175, 0}, {0x176, 0},  // SYSENTER_CS/ESP/EIP
      {0xc0000081, 0},                     // STAR
      {0xc0000082, 0},                     // LSTAR
      {0xc0000083, 0},                     // CSTAR
      {0xc0000102, 0},                     // KERNEL_GS_BASE
      {0xc0000084, 0},                     // SYSCALL_MASK
      {0x10, 0},                           // TSC
      {0x1a0, 1},                          // MISC_ENABLE: fast strings
      {0x2ff, (1 << 11) | 6},              // MTRRdefType: MTRRs enabled, default write-back
  };
  constexpr size_t n = sizeof(msrs) / sizeof(msrs[0]);
  std::vector<uint8_t> buf(sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry), 0);
  auto* list = reinterpret_cast<kvm_msrs*>(buf.data());
  list->nmsrs = n;
  for (size_t i = 0; i < n; i++) {
    list->entries[i].index = msrs[i].first;
    list->entries[i].data = msrs[i].second;
  }
  int set = ioctl(vcpu_fd, KVM_SET_MSRS, list);
  if (set < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_MSRS"));
  if (static_cast<size_t>(set) != n)
    throw VmmError(ErrorCode::kKvm, "KVM_SET_MSRS rejected MSR " + Hex(msrs[set].first));
}

void SetupLapic(int vcpu_fd) {
  kvm_lapic_state lapic{};
  CheckedIoctl(vcpu_fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
  auto set_lvt = [&](uint32_t reg, uint32_t delivery_mode) {
    uint32_t v;
    std::memcpy(&v, lapic.regs + reg, 4);
    v = (v & ~0x700u) | (delivery_mode << 8);
    std::memcpy(lapic.regs + reg, &v, 4);
  };
  set_lvt(0x350, 0x7);  // LINT0: ExtINT
  set_lvt(0x360, 0x4);  // LINT1: NMI
  CheckedIoctl(vcpu_fd, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
}

}  // namespace stencil::x86
