// The crash report's parts: the exit ring (last 16 exits, oldest first) and the vCPU state line.
#include <gtest/gtest.h>

#include "../src/arch/x86/vcpu_trace.h"

using stencil::x86::DescribeVcpuState;
using stencil::x86::ExitTrace;

namespace {
kvm_run IoExit(uint16_t port, bool out) {
  kvm_run run{};
  run.exit_reason = KVM_EXIT_IO;
  run.io.port = port;
  run.io.size = 1;
  run.io.direction = out ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN;
  return run;
}
}  // namespace

TEST(ExitTrace, KeepsTheLastSixteenExitsOldestFirst) {
  ExitTrace trace;
  EXPECT_EQ(trace.Describe(), "0 exits; last 0, oldest first:");
  for (uint16_t i = 0; i < 20; i++) trace.Record(IoExit(0x100 + i, true), 0xffffffff81000000ull + i);
  kvm_run mmio{};
  mmio.exit_reason = KVM_EXIT_MMIO;
  mmio.mmio.phys_addr = 0xd0000050;
  mmio.mmio.len = 4;
  mmio.mmio.is_write = 0;
  trace.Record(mmio, 0);
  kvm_run shutdown{};
  shutdown.exit_reason = KVM_EXIT_SHUTDOWN;
  trace.Record(shutdown, 0xfff0);
  std::string text = trace.Describe();
  EXPECT_EQ(trace.count(), 22u);
  EXPECT_EQ(text.find("22 exits; last 16, oldest first: io out 0x106/1 rip=0xffffffff81000006;"), 0u) << text;
  EXPECT_EQ(text.find("0x105/"), std::string::npos) << "older exits are overwritten: " << text;
  EXPECT_NE(text.find(" io out 0x113/1 rip=0xffffffff81000013; mmio read 0xd0000050/4; shutdown rip=0xfff0;"),
            std::string::npos)
      << text;
}

TEST(ExitTrace, NamesOtherExitsAndInPorts) {
  ExitTrace trace;
  trace.Record(IoExit(0x64, false), 0);
  kvm_run other{};
  other.exit_reason = 1234;
  trace.Record(other, 0);
  EXPECT_EQ(trace.Describe(), "2 exits; last 2, oldest first: io in 0x64/1; exit-1234;");
}

TEST(DescribeVcpuState, PrintsControlRegistersSegmentsAndTables) {
  kvm_regs r{};
  kvm_sregs s{};
  r.rip = 0xffffffff81234567ull;
  s.cr0 = 0x80050033;
  s.cr3 = 0x1000;
  s.cr4 = 0x20;
  s.efer = 0x500;
  s.idt = {0xfffffe0000000000ull, 0xfff, {}};
  s.gdt = {0x500, 0x1f, {}};
  s.cs.selector = 0x10;
  s.cs.l = 1;
  s.cs.present = 1;
  std::string text = DescribeVcpuState(r, s);
  for (const char* part : {"rip=0xffffffff81234567", "cr0=0x80050033", "cr3=0x1000", "cr4=0x20", "efer=0x500",
                           "gdt=0x500/0x1f", "idt=0xfffffe0000000000/0xfff", " cs=0010/base=0x0/limit=0x0/type=0/dpl=0/l=1/db=0/p=1"})
    EXPECT_NE(text.find(part), std::string::npos) << part << " missing in " << text;
  EXPECT_EQ(text.find("reset state"), std::string::npos);
  r.rip = 0xfff0;
  s.cs.base = 0xffff0000;
  EXPECT_NE(DescribeVcpuState(r, s).find("reset state"), std::string::npos);
}
