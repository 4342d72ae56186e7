// VMM-level live-migration downtime on this host's /dev/kvm, as the guest's progress shows it: one
// JSON line per transport on stdout.
//
// Guest: the counting CPL3 guest (test/counter_guest.h) with 256 MiB of RAM, every page above its
// code holding data (an idle guest that is not empty: all of it crosses in the first pass). It is
// migrated to a second VM in this process, over unix and over tcp loopback, as the product's
// destination builds it (the shell made while the RAM streams in). An observer thread reads the
// counter of whichever VM runs every ~20 us: the stall is the longest time the count stood still.
// Anchor, side by side: the longest standstill the same observer sees over as long a run of the
// same guest with no migration (scheduling noise on this host). Goal: a stall of at most 50 ms.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../src/error.h"
#include "../src/migration/destination.h"
#include "../src/migration/source.h"
#include "../src/vm.h"
#include "../test/counter_guest.h"

using namespace stencil;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kMemory = 256ULL << 20;
constexpr double kGoalMs = 50;

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

const volatile uint64_t* CounterIn(const Vm& vm) {
  return reinterpret_cast<const volatile uint64_t*>(vm.memory().Translate(stencil::testing::kCounterAddr, 8));
}

// Watches the count of the source and, once it exists, the destination: the longest standstill.
class StallObserver {
 public:
  explicit StallObserver(const Vm& source) : source_(CounterIn(source)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~StallObserver() { Stop(); }
  void SetDestination(const Vm& vm) { destination_.store(CounterIn(vm)); }
  double Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    return longest_ms_;
  }

 private:
  void Run() {
    uint64_t last = *source_;
    Clock::time_point changed = Clock::now();
    while (!stop_.load()) {
      uint64_t now_value = *source_;
      if (const volatile uint64_t* d = destination_.load()) now_value = std::max(now_value, static_cast<uint64_t>(*d));
      Clock::time_point now = Clock::now();
      if (now_value != last) {
        longest_ms_ = std::max(longest_ms_, Ms(changed, now));
        last = now_value;
        changed = now;
      }
      usleep(20);
    }
  }
  const volatile uint64_t* source_;
  std::atomic<const volatile uint64_t*> destination_{nullptr};
  std::atomic<bool> stop_{false};
  double longest_ms_ = 0;
  std::thread thread_;
};

std::unique_ptr<Vm> StartGuest(const std::string& dir, const std::string& kernel) {
  VmConfig config;
  config.vcpus = 1;
  config.memory.size = kMemory;
  config.memory.directory = dir;
  config.memory.name = "source-ram";
  config.kernel_path = kernel;
  auto vm = std::make_unique<Vm>(config, VmCallbacks{});
  uint8_t* ram = vm->memory().Translate(0, kMemory);
  for (uint64_t off = 4ULL << 20; off < kMemory; off += 4096) ram[off] = static_cast<uint8_t>((off >> 12) | 1);
  vm->Start();
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (*CounterIn(*vm) < 1000000) {
    if (Clock::now() > deadline) throw VmmError(ErrorCode::kState, "the guest never counted");
    usleep(1000);
  }
  return vm;
}

struct Move {
  double stall_ms, total_ms;
  int64_t vmm_downtime_ms;
  uint64_t rounds;
};

// Migrates `source` to a new VM and lets the destination count for a moment; both VMs then go.
Move MoveOnce(std::unique_ptr<Vm> source, const std::string& dir, const std::string& uri) {
  std::mutex mu;
  std::condition_variable cv;
  auto notify = [&] {
    std::lock_guard<std::mutex> lock(mu);
    cv.notify_all();
  };
  IncomingOptions options;
  options.memory_dir = dir;
  options.memory_name = "destination-ram";
  MigrationIncoming incoming(ParseMigrationEndpoint(uri), options, [&](MigrationIncoming::Event) { notify(); });
  MigrationEndpoint to = incoming.listener().endpoint();
  if (to.kind == MigrationEndpoint::Kind::kTcp) to.host = "127.0.0.1";
  incoming.Start();
  StallObserver observer(*source);
  auto t0 = Clock::now();
  MigrationSource migration(*source, to, MigrationParameters{}, [&](MigrationStatus) { notify(); });
  migration.Start();
  std::unique_lock<std::mutex> lock(mu);
  cv.wait_for(lock, std::chrono::seconds(60), [&] {
    IncomingStats s = incoming.Stats();
    return s.state_ready || s.status == MigrationStatus::kFailed || migration.finished();
  });
  lock.unlock();
  if (!incoming.Stats().state_ready)
    throw VmmError(ErrorCode::kState, "migration over " + uri + " failed: " + migration.Stats().error + incoming.Stats().error);
  ReceivedVm received = incoming.Take();
  RestoreOptions restore = options.restore;
  Vm destination(std::move(received.shell), received.snapshot, restore, std::move(received.ram), VmCallbacks{});
  observer.SetDestination(destination);
  destination.Start(!received.running);
  incoming.Complete();
  lock.lock();
  cv.wait_for(lock, std::chrono::seconds(60), [&] { return migration.finished(); });
  lock.unlock();
  auto t1 = Clock::now();
  MigrationStats stats = migration.Stats();
  if (MigrationStatusName(stats.status) != std::string("completed")) throw VmmError(ErrorCode::kState, "migration over " + uri + ": " + stats.error);
  uint64_t at_switch = *CounterIn(*source);
  for (auto end = Clock::now() + std::chrono::milliseconds(100); Clock::now() < end && *CounterIn(destination) <= at_switch;) usleep(100);
  if (*CounterIn(destination) <= at_switch) throw VmmError(ErrorCode::kState, "the destination does not count on");
  usleep(50000);
  double stall = observer.Stop();
  destination.Stop();
  source->Stop();
  return {stall, Ms(t0, t1), stats.downtime_ms, stats.rounds};
}

// The longest standstill over `ms` of a guest nothing is done to.
double NoiseFloor(const std::string& dir, const std::string& kernel, double ms) {
  auto vm = StartGuest(dir, kernel);
  StallObserver observer(*vm);
  usleep(static_cast<useconds_t>(ms * 1000));
  double floor = observer.Stop();
  vm->Stop();
  return floor;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = argc > 1 ? std::max(3, atoi(argv[1])) : 7;
  char tmpl[] = "/dev/shm/stencil-migration-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return perror("mkdtemp"), 1;
  std::string dir = tmpl;
  try {
    std::string kernel = dir + "/guest.elf";
    stencil::testing::WriteCounterGuest(kernel);
    for (const std::string transport : {"unix", "tcp"}) {
      std::vector<double> stall, total, vmm, floor;
      double rounds = 0;
      for (int i = 0; i < runs; i++) {  // interleaved with the anchor, so drift hits both alike
        std::string uri = transport == "unix" ? "unix:" + dir + "/migrate.sock" : "tcp:127.0.0.1:0";
        Move m = MoveOnce(StartGuest(dir, kernel), dir, uri);
        stall.push_back(m.stall_ms);
        total.push_back(m.total_ms);
        vmm.push_back(static_cast<double>(m.vmm_downtime_ms));
        rounds += static_cast<double>(m.rounds);
        floor.push_back(NoiseFloor(dir, kernel, m.total_ms));
      }
      double s = Median(stall), f = Median(floor);
      printf("{\"figure\":\"vmm_migration_idle\",\"transport\":\"%s\",\"mib\":%llu,\"runs\":%d,"
             "\"guest_stall_ms_median\":%.2f,\"guest_stall_ms_max\":%.2f,\"vmm_downtime_ms_median\":%.1f,"
             "\"total_ms_median\":%.1f,\"rounds_mean\":%.1f,\"anchor_no_migration_stall_ms_median\":%.2f,"
             "\"ratio_to_anchor\":%.2f,\"goal_ms\":%.0f,\"meets_goal\":%s}\n",
             transport.c_str(), static_cast<unsigned long long>(kMemory >> 20), runs, s, *std::max_element(stall.begin(), stall.end()),
             Median(vmm), Median(total), rounds / runs, f, s / std::max(f, 0.001), kGoalMs, s <= kGoalMs ? "true" : "false");
      fflush(stdout);
    }
  } catch (const std::exception& e) {
    fprintf(stderr, "migration-bench: %s\n", e.what());
    std::filesystem::remove_all(dir);
    return 1;
  }
  std::filesystem::remove_all(dir);
  return 0;
}
