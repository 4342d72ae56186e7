// The sending side of a pre-copy live migration. All RAM goes while the guest runs, then rounds
// of the pages it dirtied, until what is left fits the downtime budget at the measured bandwidth;
// then the VM pauses, the last pages and the VM's state go, and the source waits until the
// destination says the VM runs there. Any failure or a cancel before that point resumes the
// source as it was; after completion it stays paused, for its owner to release.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "transport.h"

namespace stencil {

class Vm;

enum class MigrationStatus { kNone, kSetup, kActive, kCompleted, kFailed, kCancelled };
const char* MigrationStatusName(MigrationStatus status);

struct MigrationParameters {
  std::chrono::milliseconds downtime_limit{50};  // the pause the last round may cost
  uint64_t max_bandwidth = 0;                    // bytes per second; 0: unlimited
  uint32_t max_rounds = 30;                      // dirty-page rounds before throttling (or failing)
  bool throttle = true;                          // false: fail when the rounds run out
  uint32_t throttle_initial = 20;                // percent of each vCPU's time taken away ...
  uint32_t throttle_increment = 10;              // ... and added every further round
};

struct MigrationStats {
  MigrationStatus status = MigrationStatus::kNone;
  std::string error;
  uint64_t ram_total = 0;          // bytes of guest RAM
  uint64_t transferred = 0;        // bytes sent on the connection
  uint64_t remaining = 0;          // dirty bytes at the last count
  uint64_t pages_sent = 0;         // pages sent in full
  uint64_t zero_pages = 0;         // pages sent as zero runs (or skipped)
  uint64_t rounds = 0;             // dirty-page rounds after the first pass
  uint64_t dirty_rate = 0;         // bytes the guest dirtied per second in the last round
  uint64_t bandwidth = 0;          // bytes per second measured in the last round
  int64_t expected_downtime_ms = -1;
  int64_t downtime_ms = -1;        // pause to the destination running (when completed)
  int64_t setup_time_ms = -1;
  int64_t total_time_ms = 0;
  uint32_t throttle_percent = 0;
  bool template_shared = false;    // the destination had the clone's template: unwritten pages stayed
  // Where the downtime went (microseconds, when completed): parking the vCPUs, the last dirty
  // pages (counted and sent), the VM's state (read from KVM and the devices, then sent), and the
  // destination (from the state sent to its reply that the VM runs there).
  struct DowntimePhases {
    int64_t pause_us = -1, final_ram_us = -1, save_state_us = -1, destination_us = -1;
  } downtime_phases;
};

class MigrationSource {
 public:
  // on_status: every status change, on the migration thread.
  MigrationSource(Vm& vm, MigrationEndpoint to, MigrationParameters params, std::function<void(MigrationStatus)> on_status);
  ~MigrationSource();  // cancels a running migration and waits for it to unwind
  MigrationSource(const MigrationSource&) = delete;
  MigrationSource& operator=(const MigrationSource&) = delete;

  void Start();
  // False once the VM's final state has been sent: the destination may already run it.
  bool Cancel();
  // Downtime budget and bandwidth cap may change while it runs (migrate-set-parameters).
  void SetLimits(std::chrono::milliseconds downtime_limit, uint64_t max_bandwidth);
  MigrationStats Stats() const;
  bool finished() const;

 private:
  void Run();
  void SetStatus(MigrationStatus status, const std::string& error = "");
  template <typename F>
  void Update(F f) {
    std::lock_guard<std::mutex> lock(mu_);
    f(stats_);
  }

  Vm& vm_;
  MigrationEndpoint to_;
  MigrationParameters params_;
  std::function<void(MigrationStatus)> on_status_;
  Cancellation cancel_;
  std::atomic<int64_t> downtime_limit_ms_;
  std::atomic<uint64_t> max_bandwidth_;
  std::chrono::steady_clock::time_point started_;
  mutable std::mutex mu_;
  MigrationStats stats_;
  bool committing_ = false;  // the final state is on its way: too late to cancel
  std::thread thread_;
};

}  // namespace stencil
