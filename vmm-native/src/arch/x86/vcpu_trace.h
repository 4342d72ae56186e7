// What a vCPU was doing when the VM died (triple fault, KVM internal error, failed entry): its
// registers and segment state, and its last exits. The exit trace is a fixed ring written by the
// vCPU's own thread (a few stores per exit, no locks, no allocation); everything else runs only
// when a crash is reported.
#pragma once
#include <sys/ioctl.h>

#include <array>
#include <cinttypes>
#include <cstdio>
#include <string>

#include "../../exit_stats.h"
#include "../../kvm_headers.h"

namespace stencil::x86 {

class ExitTrace {
 public:
  static constexpr size_t kSize = 16;

  // Call right after KVM_RUN returned. `rip` is the guest's RIP at the exit when KVM reports it
  // (KVM_SYNC_X86_REGS), else 0.
  void Record(const kvm_run& run, uint64_t rip) {
    Entry& e = entries_[count_++ % kSize];
    e.reason = run.exit_reason;
    e.rip = rip;
    e.addr = 0;
    e.size = 0;
    e.write = false;
    if (run.exit_reason == KVM_EXIT_IO) {
      e.addr = run.io.port;
      e.size = run.io.size;
      e.write = run.io.direction == KVM_EXIT_IO_OUT;
    } else if (run.exit_reason == KVM_EXIT_MMIO) {
      e.addr = run.mmio.phys_addr;
      e.size = static_cast<uint8_t>(run.mmio.len);
      e.write = run.mmio.is_write;
    }
  }

  uint64_t count() const { return count_; }

  // "N exits; last K, oldest first: io out 0x3f8/1 rip=0x...; mmio read 0xd0000000/4; ..."
  std::string Describe() const {
    size_t n = count_ < kSize ? count_ : kSize;
    std::string out = std::to_string(count_) + " exits; last " + std::to_string(n) + ", oldest first:";
    for (uint64_t i = count_ - n; i < count_; i++) {
      const Entry& e = entries_[i % kSize];
      char buf[96];
      if (e.reason == KVM_EXIT_IO || e.reason == KVM_EXIT_MMIO)
        snprintf(buf, sizeof buf, " %s %s 0x%" PRIx64 "/%u", e.reason == KVM_EXIT_IO ? "io" : "mmio",
                 e.write ? (e.reason == KVM_EXIT_IO ? "out" : "write") : (e.reason == KVM_EXIT_IO ? "in" : "read"), e.addr, e.size);
      else
        snprintf(buf, sizeof buf, " %s", KvmExitName(e.reason).c_str());
      out += buf;
      if (e.rip) {
        snprintf(buf, sizeof buf, " rip=0x%" PRIx64, e.rip);
        out += buf;
      }
      out += ";";
    }
    return out;
  }

 private:
  struct Entry {
    uint64_t addr;
    uint64_t rip;
    uint32_t reason;
    uint8_t size;
    bool write;
  };
  std::array<Entry, kSize> entries_{};
  uint64_t count_ = 0;
};

inline std::string DescribeSegment(const char* name, const kvm_segment& s) {
  char buf[128];
  snprintf(buf, sizeof buf, " %s=%04x/base=0x%" PRIx64 "/limit=0x%x/type=%u/dpl=%u/l=%u/db=%u/p=%u", name, s.selector,
           static_cast<uint64_t>(s.base), s.limit, s.type, s.dpl, s.l, s.db, s.present);
  return buf;
}

// One line: general registers, control registers, EFER, segments, GDT/IDT.
inline std::string DescribeVcpuState(const kvm_regs& r, const kvm_sregs& s) {
  char buf[512];
  snprintf(buf, sizeof buf,
           "rip=0x%llx rsp=0x%llx rbp=0x%llx rflags=0x%llx rax=0x%llx rbx=0x%llx rcx=0x%llx rdx=0x%llx "
           "rsi=0x%llx rdi=0x%llx cr0=0x%llx cr2=0x%llx cr3=0x%llx cr4=0x%llx cr8=0x%llx efer=0x%llx "
           "gdt=0x%llx/0x%x idt=0x%llx/0x%x",
           r.rip, r.rsp, r.rbp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, s.cr0, s.cr2, s.cr3, s.cr4, s.cr8,
           s.efer, s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
  std::string out = buf;
  out += DescribeSegment("cs", s.cs) + DescribeSegment("ss", s.ss) + DescribeSegment("ds", s.ds) +
         DescribeSegment("tr", s.tr);
  // AMD SVM has no defined VMCB after a shutdown intercept: KVM re-initializes the vCPU, so what
  // is read back is the reset state, not the state that faulted (the exit trace still holds).
  if (r.rip == 0xfff0 && s.cs.base == 0xffff0000)
    out += " (reset state: KVM re-initialized the vCPU after the shutdown, as it does on AMD SVM)";
  return out;
}

// Reads a vCPU's general and special registers; false if KVM refuses. Only for a vCPU that is
// parked or has just exited: on a running one the ioctls wait for its next exit.
inline bool ReadVcpuRegisters(int vcpu_fd, kvm_regs* regs, kvm_sregs* sregs) {
  return ioctl(vcpu_fd, KVM_GET_REGS, regs) == 0 && ioctl(vcpu_fd, KVM_GET_SREGS, sregs) == 0;
}

// A parked vCPU (registers read by the caller) and the events KVM holds for it (an exception or
// interrupt being delivered, NMI), for a guest that stalls without exiting.
inline std::string DescribeParkedVcpu(int vcpu_fd, const kvm_regs& regs, const kvm_sregs& sregs) {
  kvm_vcpu_events events{};
  if (ioctl(vcpu_fd, KVM_GET_VCPU_EVENTS, &events) != 0) return DescribeVcpuState(regs, sregs) + "; events unreadable";
  char buf[256];
  snprintf(buf, sizeof buf, "; exception injected=%u pending=%u nr=%u error_code=0x%x; interrupt injected=%u nr=%u shadow=%u; nmi injected=%u pending=%u",
           events.exception.injected, events.exception.pending, events.exception.nr, events.exception.error_code,
           events.interrupt.injected, events.interrupt.nr, events.interrupt.shadow, events.nmi.injected, events.nmi.pending);
  return DescribeVcpuState(regs, sregs) + buf;
}

// The crash report of one vCPU: its state and its exit trace.
inline std::string DumpVcpu(int vcpu_fd, const ExitTrace& trace) {
  kvm_regs regs{};
  kvm_sregs sregs{};
  std::string state = ReadVcpuRegisters(vcpu_fd, &regs, &sregs) ? DescribeVcpuState(regs, sregs) : "registers unreadable";
  return "; vCPU state: " + state + "; " + trace.Describe();
}

}  // namespace stencil::x86
