// Exit accounting: counts by reason, busiest ports/addresses first, phases, first console byte,
// and KVM's binary statistics where this host's KVM offers them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "../src/exit_stats.h"
#include "../src/fd.h"
#include "../src/kvm.h"
#include "../src/kvm_headers.h"

using namespace stencil;

namespace {
kvm_run IoExit(uint16_t port) {
  kvm_run run{};
  run.exit_reason = KVM_EXIT_IO;
  run.io.port = port;
  return run;
}
kvm_run MmioExit(uint64_t addr) {
  kvm_run run{};
  run.exit_reason = KVM_EXIT_MMIO;
  run.mmio.phys_addr = addr;
  return run;
}
uint64_t Count(const NamedCounts& counts, const std::string& name) {
  auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& p) { return p.first == name; });
  return it == counts.end() ? 0 : it->second;
}
}  // namespace

TEST(ExitStats, CountsByReasonAndRanksPortsAndAddresses) {
  ExitStats stats;
  for (int i = 0; i < 5; i++) stats.RecordExit(IoExit(0x3f8));
  for (int i = 0; i < 2; i++) stats.RecordExit(IoExit(0x70));
  stats.RecordExit(IoExit(0x60));
  for (int i = 0; i < 3; i++) stats.RecordExit(MmioExit(0xd0000050));
  kvm_run intr{};
  intr.exit_reason = KVM_EXIT_INTR;
  stats.RecordExit(intr);
  kvm_run odd{};
  odd.exit_reason = 1000;  // beyond the table: counted, not dropped
  stats.RecordExit(odd);

  ExitStatsReport r = stats.Report(2, {});
  EXPECT_EQ(Count(r.exits_by_reason, "io"), 8u);
  EXPECT_EQ(Count(r.exits_by_reason, "mmio"), 3u);
  EXPECT_EQ(Count(r.exits_by_reason, "intr"), 1u);
  EXPECT_EQ(Count(r.exits_by_reason, "exit-63"), 1u);
  ASSERT_EQ(r.top_io_ports.size(), 2u);  // top_n = 2 of 3 ports
  EXPECT_EQ(r.top_io_ports[0], std::make_pair(uint64_t{0x3f8}, uint64_t{5}));
  EXPECT_EQ(r.top_io_ports[1], std::make_pair(uint64_t{0x70}, uint64_t{2}));
  ASSERT_EQ(r.top_mmio.size(), 1u);
  EXPECT_EQ(r.top_mmio[0], std::make_pair(uint64_t{0xd0000050}, uint64_t{3}));
}

TEST(ExitStats, TimesPhasesAndOnlyTheFirstConsoleByte) {
  ExitStats stats;
  stats.TimePhase("slow", [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); });
  stats.TimePhase("fast", [] {});
  EXPECT_EQ(stats.Report(10, {}).first_console_ms, -1);
  stats.MarkStarted();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stats.RecordConsoleOutput();
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  stats.RecordConsoleOutput();  // later bytes leave the first time alone

  ExitStatsReport r = stats.Report(10, {});
  ASSERT_EQ(r.setup_phases_ms.size(), 2u);
  EXPECT_EQ(r.setup_phases_ms[0].first, "slow");
  EXPECT_GE(r.setup_phases_ms[0].second, 19.0);
  EXPECT_EQ(r.setup_phases_ms[1].first, "fast");
  EXPECT_LT(r.setup_phases_ms[1].second, r.setup_phases_ms[0].second);
  EXPECT_GE(r.first_console_ms, 19.0);
  EXPECT_LT(r.first_console_ms, 45.0);
}

TEST(ExitStats, KvmStatsOfANonKvmFdAreEmpty) {
  UniqueFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
  EXPECT_FALSE(OpenKvmStats(null.get()).valid());
  EXPECT_TRUE(ReadKvmStats(OpenKvmStats(null.get()).get()).empty());
}

TEST(ExitStats, ReadsKvmBinaryStatsOfAVcpu) {
  UniqueFd kvm(open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm.valid()) GTEST_SKIP() << "no /dev/kvm here";
  UniqueFd vm(CreateVmFd(kvm.get()));
  ASSERT_TRUE(vm.valid());
  UniqueFd vcpu(ioctl(vm.get(), KVM_CREATE_VCPU, 0));
  ASSERT_TRUE(vcpu.valid());
  if (ioctl(kvm.get(), KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD) <= 0) GTEST_SKIP() << "KVM without binary stats";
  UniqueFd stats_fd = OpenKvmStats(vcpu.get());
  ASSERT_TRUE(stats_fd.valid());
  NamedCounts stats = ReadKvmStats(stats_fd.get());
  // Every KVM with binary stats has the generic vCPU counters; a fresh vCPU has not exited yet.
  auto exits = std::find_if(stats.begin(), stats.end(), [](const auto& p) { return p.first == "exits"; });
  ASSERT_NE(exits, stats.end());
  EXPECT_EQ(exits->second, 0u);
  EXPECT_NE(std::find_if(stats.begin(), stats.end(), [](const auto& p) { return p.first == "halt_exits"; }),
            stats.end());
}
