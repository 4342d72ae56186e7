#include "vcpu_state.h"

#include <sys/ioctl.h>

#include <algorithm>
#include <string>

#include "../../error.h"
#include "../../kvm.h"

namespace stencil::x86 {

namespace {

constexpr uint32_t kMsrTsc = 0x10;
constexpr uint32_t kMsrTscDeadline = 0x6e0;
constexpr uint32_t kMsrKvmPvEoiEnable = 0x4b564d04;  // guest address of the flag | enabled bit
constexpr uint64_t kPvEoiEnabled = 1, kPvEoiPendingBit = 1;
constexpr uint32_t kMaxCpuidEntries = 256;
constexpr size_t kMaxMsrs = 1024;


// KVM_GET_MSRS / KVM_SET_MSRS on a list; returns how many entries KVM processed (it stops at
// the first MSR it refuses).
int MsrIoctl(int vcpu_fd, unsigned long req, std::vector<kvm_msr_entry>& entries) {
  std::vector<uint8_t> buf(sizeof(kvm_msrs) + entries.size() * sizeof(kvm_msr_entry));
  auto* list = reinterpret_cast<kvm_msrs*>(buf.data());
  list->nmsrs = static_cast<uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(), list->entries);
  int n = ioctl(vcpu_fd, req, list);
  if (n > 0) std::copy(list->entries, list->entries + n, entries.begin());
  return n;
}

}  // namespace

std::vector<uint32_t> SaveableMsrs(int kvm_fd, int vcpu_fd) {
  std::vector<uint8_t> buf(sizeof(kvm_msr_list) + kMaxMsrs * sizeof(uint32_t));
  auto* list = reinterpret_cast<kvm_msr_list*>(buf.data());
  list->nmsrs = kMaxMsrs;
  CheckedIoctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, list, "KVM_GET_MSR_INDEX_LIST");
  std::vector<uint32_t> readable;
  for (uint32_t i = 0; i < list->nmsrs; i++) {
    std::vector<kvm_msr_entry> one(1);
    one[0].index = list->indices[i];
    if (MsrIoctl(vcpu_fd, KVM_GET_MSRS, one) == 1) readable.push_back(list->indices[i]);
  }
  return readable;
}

VcpuState VcpuState::Save(int vcpu_fd, const std::vector<uint32_t>& msr_indexes) {
  // Order (as Firecracker documents it): MP state first, because reading it makes KVM accept
  // pending INIT/SIPI events, which changes LAPIC and register state; vCPU events last.
  VcpuState s;
  CheckedIoctl(vcpu_fd, KVM_GET_MP_STATE, &s.mp_state, "KVM_GET_MP_STATE");
  CheckedIoctl(vcpu_fd, KVM_GET_REGS, &s.regs, "KVM_GET_REGS");
  CheckedIoctl(vcpu_fd, KVM_GET_SREGS, &s.sregs, "KVM_GET_SREGS");
  CheckedIoctl(vcpu_fd, KVM_GET_XSAVE, &s.xsave, "KVM_GET_XSAVE");
  CheckedIoctl(vcpu_fd, KVM_GET_XCRS, &s.xcrs, "KVM_GET_XCRS");
  CheckedIoctl(vcpu_fd, KVM_GET_DEBUGREGS, &s.debug_regs, "KVM_GET_DEBUGREGS");
  CheckedIoctl(vcpu_fd, KVM_GET_LAPIC, &s.lapic, "KVM_GET_LAPIC");
  int khz = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0);
  s.tsc_khz = khz > 0 ? static_cast<uint32_t>(khz) : 0;

  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + kMaxCpuidEntries * sizeof(kvm_cpuid_entry2));
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
  cpuid->nent = kMaxCpuidEntries;
  CheckedIoctl(vcpu_fd, KVM_GET_CPUID2, cpuid, "KVM_GET_CPUID2");
  s.cpuid.assign(cpuid->entries, cpuid->entries + cpuid->nent);

  s.msrs.resize(msr_indexes.size());
  for (size_t i = 0; i < msr_indexes.size(); i++) s.msrs[i] = kvm_msr_entry{msr_indexes[i], 0, 0};
  int got = MsrIoctl(vcpu_fd, KVM_GET_MSRS, s.msrs);
  if (got < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_GET_MSRS"));
  if (static_cast<size_t>(got) != s.msrs.size())
    throw VmmError(ErrorCode::kKvm, "KVM_GET_MSRS refused MSR " + HexString(s.msrs[got].index));
  // A deadline of 0 means "timer disarmed" but a snapshot taken as it fired can leave it 0 with
  // the interrupt undelivered; re-arming at the current TSC makes it fire at once on restore.
  uint64_t tsc = 0;
  for (const auto& m : s.msrs)
    if (m.index == kMsrTsc) tsc = m.data;
  for (auto& m : s.msrs)
    if (m.index == kMsrTscDeadline && m.data == 0) m.data = tsc;

  CheckedIoctl(vcpu_fd, KVM_GET_VCPU_EVENTS, &s.events, "KVM_GET_VCPU_EVENTS");
  return s;
}

void VcpuState::Restore(int vcpu_fd) const {
  // Order: CPUID before anything that depends on features; REGS before VCPU_EVENTS (setting
  // registers clears pending exceptions); SREGS before LAPIC (SREGS carries the APIC base);
  // LAPIC before MSRs (the TSC deadline needs the LAPIC in TSC-deadline mode); TSC before the
  // TSC deadline (a second batch).
  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + cpuid.size() * sizeof(kvm_cpuid_entry2));
  auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
  c->nent = static_cast<uint32_t>(cpuid.size());
  std::copy(cpuid.begin(), cpuid.end(), c->entries);
  CheckedIoctl(vcpu_fd, KVM_SET_CPUID2, c, "KVM_SET_CPUID2");
  if (tsc_khz) {
    int current = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0);
    // Calibration differs slightly between boots: scale only beyond 250 ppm.
    if (current > 0 && std::abs(current - static_cast<int64_t>(tsc_khz)) * 4000 > tsc_khz &&
        ioctl(vcpu_fd, KVM_SET_TSC_KHZ, tsc_khz) < 0)
      throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_TSC_KHZ to the snapshot's " + std::to_string(tsc_khz) +
                                                " kHz (this host runs at " + std::to_string(current) + " kHz)"));
  }
  CheckedIoctl(vcpu_fd, KVM_SET_MP_STATE, const_cast<kvm_mp_state*>(&mp_state), "KVM_SET_MP_STATE");
  CheckedIoctl(vcpu_fd, KVM_SET_REGS, const_cast<kvm_regs*>(&regs), "KVM_SET_REGS");
  CheckedIoctl(vcpu_fd, KVM_SET_SREGS, const_cast<kvm_sregs*>(&sregs), "KVM_SET_SREGS");
  CheckedIoctl(vcpu_fd, KVM_SET_XSAVE, const_cast<kvm_xsave*>(&xsave), "KVM_SET_XSAVE");
  CheckedIoctl(vcpu_fd, KVM_SET_XCRS, const_cast<kvm_xcrs*>(&xcrs), "KVM_SET_XCRS");
  CheckedIoctl(vcpu_fd, KVM_SET_DEBUGREGS, const_cast<kvm_debugregs*>(&debug_regs), "KVM_SET_DEBUGREGS");
  CheckedIoctl(vcpu_fd, KVM_SET_LAPIC, const_cast<kvm_lapic_state*>(&lapic), "KVM_SET_LAPIC");

  std::vector<kvm_msr_entry> first, deferred;
  for (const auto& m : msrs) (m.index == kMsrTscDeadline ? deferred : first).push_back(m);
  for (auto* batch : {&first, &deferred}) {
    if (batch->empty()) continue;
    int set = MsrIoctl(vcpu_fd, KVM_SET_MSRS, *batch);
    if (set < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_MSRS"));
    if (static_cast<size_t>(set) != batch->size())
      throw VmmError(ErrorCode::kKvm, "KVM_SET_MSRS refused MSR " + HexString((*batch)[set].index) + " = " +
                                          HexString((*batch)[set].data));
  }
  CheckedIoctl(vcpu_fd, KVM_SET_VCPU_EVENTS, const_cast<kvm_vcpu_events*>(&events), "KVM_SET_VCPU_EVENTS");
  // Tell the guest's kvmclock it was paused (no soft-lockup warnings); not every KVM has it.
  ioctl(vcpu_fd, KVM_KVMCLOCK_CTRL, 0);
}

void VcpuState::ClearPvEoiPending(const GuestMemoryAccess& mem) const {
  for (const auto& m : msrs) {
    if (m.index != kMsrKvmPvEoiEnable || !(m.data & kPvEoiEnabled)) continue;
    if (uint8_t* flag = mem.Translate(m.data & ~kPvEoiEnabled, 1)) *flag &= static_cast<uint8_t>(~kPvEoiPendingBit);
  }
}

void VcpuState::Encode(ByteWriter& w) const {
  w.U32(static_cast<uint32_t>(cpuid.size()));
  for (const auto& e : cpuid) w.Pod(e);
  w.Pod(mp_state);
  w.Pod(regs);
  w.Pod(sregs);
  w.Pod(xsave);
  w.Pod(xcrs);
  w.Pod(debug_regs);
  w.Pod(lapic);
  w.U32(static_cast<uint32_t>(msrs.size()));
  for (const auto& m : msrs) w.U32(m.index), w.U64(m.data);
  w.Pod(events);
  w.U32(tsc_khz);
}

VcpuState VcpuState::Decode(ByteReader& r) {
  VcpuState s;
  s.cpuid.resize(r.Count(kMaxCpuidEntries, "CPUID entries"));
  for (auto& e : s.cpuid) r.Pod(&e, "CPUID entry");
  r.Pod(&s.mp_state, "mp_state");
  r.Pod(&s.regs, "regs");
  r.Pod(&s.sregs, "sregs");
  r.Pod(&s.xsave, "xsave");
  r.Pod(&s.xcrs, "xcrs");
  r.Pod(&s.debug_regs, "debugregs");
  r.Pod(&s.lapic, "lapic");
  s.msrs.resize(r.Count(kMaxMsrs, "MSRs"));
  for (auto& e : s.msrs) {
    e.index = r.U32();
    e.data = r.U64();
  }
  r.Pod(&s.events, "vcpu_events");
  s.tsc_khz = r.U32();
  return s;
}

VmState VmState::Save(int vm_fd) {
  VmState s;
  s.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  s.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  s.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  CheckedIoctl(vm_fd, KVM_GET_IRQCHIP, &s.pic_master, "KVM_GET_IRQCHIP (PIC master)");
  CheckedIoctl(vm_fd, KVM_GET_IRQCHIP, &s.pic_slave, "KVM_GET_IRQCHIP (PIC slave)");
  CheckedIoctl(vm_fd, KVM_GET_IRQCHIP, &s.ioapic, "KVM_GET_IRQCHIP (IOAPIC)");
  CheckedIoctl(vm_fd, KVM_GET_PIT2, &s.pit, "KVM_GET_PIT2");
  CheckedIoctl(vm_fd, KVM_GET_CLOCK, &s.clock, "KVM_GET_CLOCK");
  return s;
}

void VmState::Restore(int vm_fd) const {
  // Only the clock value is restorable; the flags KVM_GET_CLOCK reports (TSC_STABLE, ...) are
  // output-only and refused by KVM_SET_CLOCK.
  kvm_clock_data clock_in{};
  clock_in.clock = clock.clock;
  CheckedIoctl(vm_fd, KVM_SET_CLOCK, &clock_in, "KVM_SET_CLOCK");
  CheckedIoctl(vm_fd, KVM_SET_PIT2, const_cast<kvm_pit_state2*>(&pit), "KVM_SET_PIT2");
  CheckedIoctl(vm_fd, KVM_SET_IRQCHIP, const_cast<kvm_irqchip*>(&pic_master), "KVM_SET_IRQCHIP (PIC master)");
  CheckedIoctl(vm_fd, KVM_SET_IRQCHIP, const_cast<kvm_irqchip*>(&pic_slave), "KVM_SET_IRQCHIP (PIC slave)");
  CheckedIoctl(vm_fd, KVM_SET_IRQCHIP, const_cast<kvm_irqchip*>(&ioapic), "KVM_SET_IRQCHIP (IOAPIC)");
}

void VmState::Encode(ByteWriter& w) const {
  w.Pod(pic_master);
  w.Pod(pic_slave);
  w.Pod(ioapic);
  w.Pod(pit);
  w.Pod(clock);
}

VmState VmState::Decode(ByteReader& r) {
  VmState s;
  r.Pod(&s.pic_master, "PIC master");
  r.Pod(&s.pic_slave, "PIC slave");
  r.Pod(&s.ioapic, "IOAPIC");
  r.Pod(&s.pit, "PIT");
  r.Pod(&s.clock, "kvmclock");
  if (s.pic_master.chip_id != KVM_IRQCHIP_PIC_MASTER || s.pic_slave.chip_id != KVM_IRQCHIP_PIC_SLAVE ||
      s.ioapic.chip_id != KVM_IRQCHIP_IOAPIC)
    r.Fail("irqchip ids are not PIC master, PIC slave, IOAPIC");
  return s;
}

}  // namespace stencil::x86
