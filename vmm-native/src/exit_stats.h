// Where a VM's time goes, seen from the VMM: how often vCPUs left KVM_RUN and why, which I/O ports
// and MMIO addresses caused it, KVM's own counters (which include the exits KVM handles without
// coming back to the VMM, e.g. HLT with the in-kernel LAPIC), how long each VMM setup phase took
// and when the guest's first console byte arrived. Recording an exit costs an uncontended lock and
// a hash update, small next to the exit itself.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fd.h"

struct kvm_run;

namespace stencil {

using NamedCounts = std::vector<std::pair<std::string, uint64_t>>;
using AddressCounts = std::vector<std::pair<uint64_t, uint64_t>>;  // (port or address, exits)

struct ExitStatsReport {
  NamedCounts exits_by_reason;   // exits that reached the VMM, by KVM exit reason ("io", "mmio", ...)
  AddressCounts top_io_ports;    // busiest first
  AddressCounts top_mmio;        // guest-physical addresses, busiest first
  std::vector<std::pair<std::string, double>> setup_phases_ms;  // VMM setup before Start, in order
  double first_console_ms = -1;  // Start to the guest's first console byte; -1: none yet
  NamedCounts kvm_vcpu_stats;    // KVM's binary statistics, summed over the vCPUs, non-zero ones
  std::vector<std::string> paused_vcpus;  // a paused VM's vCPU states (registers, pending events)
};

class ExitStats {
 public:
  using Clock = std::chrono::steady_clock;

  // Runs `phase` and records its duration under `name`.
  template <typename F>
  void TimePhase(const char* name, F&& phase) {
    Clock::time_point start = Clock::now();
    phase();
    std::lock_guard<std::mutex> lock(mu_);
    phases_.emplace_back(name, Millis(Clock::now() - start));
  }
  void MarkStarted();
  void RecordExit(const kvm_run& run);  // on the vCPU thread, after each successful KVM_RUN
  void RecordConsoleOutput();           // on every console write; only the first one is timed
  // Reads KVM's statistics from the vCPUs' stats fds (OpenKvmStats) as well.
  ExitStatsReport Report(size_t top_n, const std::vector<int>& stats_fds) const;

 private:
  static double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

  mutable std::mutex mu_;
  std::array<uint64_t, 64> by_reason_{};  // indexed by KVM_EXIT_*; larger reasons count in the last slot
  std::unordered_map<uint64_t, uint64_t> io_ports_;
  std::unordered_map<uint64_t, uint64_t> mmio_;
  std::vector<std::pair<std::string, double>> phases_;
  Clock::time_point started_{};
  std::atomic<bool> console_seen_{false};
  double first_console_ms_ = -1;
};

// The binary statistics fd of a vCPU or VM fd (KVM_GET_STATS_FD, Linux 5.14+); invalid when the
// kernel offers none. Open it before the vCPU runs: a vCPU ioctl waits for KVM_RUN to return, which a
// spinning guest may never do, while reading the stats fd takes no vCPU lock.
UniqueFd OpenKvmStats(int kvm_object_fd);
// The single-value counters of a stats fd by name. Empty for an invalid fd.
NamedCounts ReadKvmStats(int stats_fd);

// A KVM_EXIT_* reason as a short name ("io", "mmio", "hlt", ...; "exit-<n>" for the rest).
std::string KvmExitName(uint32_t reason);

}  // namespace stencil
