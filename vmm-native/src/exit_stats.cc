#include "exit_stats.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "fd.h"
#include "kvm_headers.h"

namespace stencil {

namespace {

AddressCounts Busiest(const std::unordered_map<uint64_t, uint64_t>& counts, size_t top_n) {
  AddressCounts sorted(counts.begin(), counts.end());
  // Ties by address, so a report is stable from one run to the next.
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
  if (sorted.size() > top_n) sorted.resize(top_n);
  return sorted;
}

bool ReadAt(int fd, void* buf, size_t len, uint64_t offset) {
  return pread(fd, buf, len, static_cast<off_t>(offset)) == static_cast<ssize_t>(len);
}

}  // namespace

std::string KvmExitName(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_IO: return "io";
    case KVM_EXIT_MMIO: return "mmio";
    case KVM_EXIT_HLT: return "hlt";
    case KVM_EXIT_INTR: return "intr";
    case KVM_EXIT_SHUTDOWN: return "shutdown";
    case KVM_EXIT_SYSTEM_EVENT: return "system-event";
    case KVM_EXIT_INTERNAL_ERROR: return "internal-error";
    case KVM_EXIT_FAIL_ENTRY: return "fail-entry";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "irq-window-open";
    case KVM_EXIT_DEBUG: return "debug";
    default: return "exit-" + std::to_string(reason);
  }
}

void ExitStats::MarkStarted() {
  std::lock_guard<std::mutex> lock(mu_);
  started_ = Clock::now();
}

void ExitStats::RecordExit(const kvm_run& run) {
  std::lock_guard<std::mutex> lock(mu_);
  by_reason_[std::min<size_t>(run.exit_reason, by_reason_.size() - 1)]++;
  if (run.exit_reason == KVM_EXIT_IO)
    io_ports_[run.io.port]++;
  else if (run.exit_reason == KVM_EXIT_MMIO)
    mmio_[run.mmio.phys_addr]++;
}

void ExitStats::RecordConsoleOutput() {
  if (console_seen_.exchange(true, std::memory_order_relaxed)) return;
  std::lock_guard<std::mutex> lock(mu_);
  first_console_ms_ = Millis(Clock::now() - started_);
}

ExitStatsReport ExitStats::Report(size_t top_n, const std::vector<int>& stats_fds) const {
  ExitStatsReport r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < by_reason_.size(); i++)
      if (by_reason_[i]) r.exits_by_reason.emplace_back(KvmExitName(static_cast<uint32_t>(i)), by_reason_[i]);
    r.top_io_ports = Busiest(io_ports_, top_n);
    r.top_mmio = Busiest(mmio_, top_n);
    r.setup_phases_ms = phases_;
    r.first_console_ms = first_console_ms_;
  }
  std::map<std::string, uint64_t> kvm;
  for (int fd : stats_fds)
    for (const auto& [name, value] : ReadKvmStats(fd)) kvm[name] += value;
  for (const auto& [name, value] : kvm)
    if (value) r.kvm_vcpu_stats.emplace_back(name, value);
  return r;
}

UniqueFd OpenKvmStats(int kvm_object_fd) { return UniqueFd(ioctl(kvm_object_fd, KVM_GET_STATS_FD, 0)); }

NamedCounts ReadKvmStats(int stats_fd) {
  if (stats_fd < 0) return {};
  kvm_stats_header header{};
  if (!ReadAt(stats_fd, &header, sizeof header, 0)) return {};
  // Each descriptor is followed by its name, name_size bytes (NUL-terminated).
  const size_t desc_size = sizeof(kvm_stats_desc) + header.name_size;
  std::vector<char> descs(desc_size * header.num_desc);
  if (!ReadAt(stats_fd, descs.data(), descs.size(), header.desc_offset)) return {};
  NamedCounts out;
  for (uint32_t i = 0; i < header.num_desc; i++) {
    const auto* desc = reinterpret_cast<const kvm_stats_desc*>(descs.data() + i * desc_size);
    const uint32_t type = desc->flags & KVM_STATS_TYPE_MASK;
    if (desc->size != 1 || type > KVM_STATS_TYPE_PEAK) continue;  // histograms: not counters
    uint64_t value = 0;
    if (!ReadAt(stats_fd, &value, sizeof value, uint64_t{header.data_offset} + desc->offset)) continue;
    out.emplace_back(std::string(desc->name, strnlen(desc->name, header.name_size)), value);
  }
  return out;
}

}  // namespace stencil
