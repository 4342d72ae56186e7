// Saved state of one x86 vCPU, in the order KVM needs it back (see VcpuState::Restore), plus the
// VM-wide x86 state (in-kernel PIC/IOAPIC, PIT, kvmclock).
#pragma once
#include "../../kvm_headers.h"

#include <cstdint>
#include <vector>

#include "../../memory.h"
#include "../../snapshot/bytes.h"

namespace stencil::x86 {

// The MSRs KVM reports as saveable (KVM_GET_MSR_INDEX_LIST) that this vCPU can read: an MSR KVM
// lists but refuses on this CPU (e.g. an absent feature's) is left out. Computed once per VM.
std::vector<uint32_t> SaveableMsrs(int kvm_fd, int vcpu_fd);

struct VcpuState {
  std::vector<kvm_cpuid_entry2> cpuid;
  kvm_mp_state mp_state{};
  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_xsave xsave{};  // legacy 4 KiB area: x87/SSE/AVX state (KVM_GET_XSAVE)
  kvm_xcrs xcrs{};
  kvm_debugregs debug_regs{};
  kvm_lapic_state lapic{};
  std::vector<kvm_msr_entry> msrs;
  kvm_vcpu_events events{};
  uint32_t tsc_khz = 0;  // 0: KVM could not tell

  // Needs a vCPU that is not running (the VM paused). Throws VmmError(kKvm) naming the ioctl.
  static VcpuState Save(int vcpu_fd, const std::vector<uint32_t>& msr_indexes);
  // For a freshly created vCPU that has never run.
  void Restore(int vcpu_fd) const;
  // KVM's paravirtual EOI: KVM sets a flag in guest memory that lets the guest skip its EOI write,
  // and remembers having set it only in state no ioctl reports. A restored vCPU's KVM does not
  // know about a flag its snapshot left set (it takes the flag over on entering the guest only
  // when no other interrupt is pending), so the guest's next EOI can be lost and the vector stay
  // in service, blocking its priority class and all below it (the timer's: the guest sleeps
  // forever). Clearing the flag before the first run makes that EOI a real one. Call with the
  // restored guest's memory; a flag outside it is left alone.
  void ClearPvEoiPending(const GuestMemoryAccess& mem) const;

  void Encode(ByteWriter& w) const;
  static VcpuState Decode(ByteReader& r);
};

struct VmState {
  kvm_irqchip pic_master{}, pic_slave{}, ioapic{};
  kvm_pit_state2 pit{};
  kvm_clock_data clock{};

  static VmState Save(int vm_fd);
  void Restore(int vm_fd) const;

  void Encode(ByteWriter& w) const;
  static VmState Decode(ByteReader& r);
};

}  // namespace stencil::x86
