// VMM-level live-migration downtime on this host's /dev/kvm, as the guest's progress shows it: one
// JSON line per guest and transport on stdout.
//
// Guests: the counting CPL3 guest (test/counter_guest.h) with 256 MiB of RAM, every page above its
// code holding data, so all of it crosses in the first pass.
//   idle      counts as fast as it can in one page;
//   dirtying  also writes one new page of a 128 MiB range per count, paced from the TSC at
//             50 MiB/s (12,800 pages a second), so every round finds what it dirtied meanwhile.
// Each is migrated to a second VM in this process, over unix and over tcp loopback, as the
// product's destination builds it (the shell made while the RAM streams in), with the default
// parameters (50 ms downtime budget, no bandwidth cap). An observer thread reads the counter of
// whichever VM runs every ~20 us: the stall is the longest time the count stood still.
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

// A guest to migrate: its image and the count it must reach before the run starts.
struct Guest {
  std::string name, kernel;
  uint64_t warm_count;
  double dirty_mib_per_s;
};

constexpr uint64_t kDirtyRangeBase = 64ULL << 20;
constexpr uint32_t kDirtyRangePages = 32768;  // 128 MiB
constexpr double kDirtyMibPerS = 50;

std::unique_ptr<Vm> StartGuest(const std::string& dir, const Guest& guest) {
  VmConfig config;
  config.vcpus = 1;
  config.memory.size = kMemory;
  config.memory.directory = dir;
  config.memory.name = "source-ram";
  config.kernel_path = guest.kernel;
  auto vm = std::make_unique<Vm>(config, VmCallbacks{});
  uint8_t* ram = vm->memory().Translate(0, kMemory);
  for (uint64_t off = 4ULL << 20; off < kMemory; off += 4096) ram[off] = static_cast<uint8_t>((off >> 12) | 1);
  vm->Start();
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (*CounterIn(*vm) < guest.warm_count) {
    if (Clock::now() > deadline) throw VmmError(ErrorCode::kState, "the guest never counted");
    usleep(1000);
  }
  return vm;
}

struct Move {
  double stall_ms, total_ms;
  int64_t vmm_downtime_ms;
  uint64_t rounds, dirty_rate;
  uint32_t throttle_percent;
  MigrationStats::DowntimePhases phases;
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
  bool accepted = false;  // the destination builds the VM then, while RAM streams in, as the shim does
  MigrationIncoming incoming(ParseMigrationEndpoint(uri), options, [&](MigrationIncoming::Event e) {
    std::lock_guard<std::mutex> lock(mu);
    if (e == MigrationIncoming::Event::kAccepted) accepted = true;
    cv.notify_all();
  });
  MigrationEndpoint to = incoming.listener().endpoint();
  if (to.kind == MigrationEndpoint::Kind::kTcp) to.host = "127.0.0.1";
  incoming.Start();
  StallObserver observer(*source);
  auto t0 = Clock::now();
  MigrationSource migration(*source, to, MigrationParameters{}, [&](MigrationStatus) { notify(); });
  migration.Start();
  std::unique_lock<std::mutex> lock(mu);
  auto over = [&] {
    IncomingStats s = incoming.Stats();
    return s.status == MigrationStatus::kFailed || migration.finished();
  };
  cv.wait_for(lock, std::chrono::seconds(60), [&] { return accepted || over(); });
  lock.unlock();
  if (!accepted) throw VmmError(ErrorCode::kState, "migration over " + uri + " failed: " + migration.Stats().error + incoming.Stats().error);
  ArrivingVm arriving = incoming.TakeArriving();
  Vm destination(std::move(arriving.shell), arriving.description, options.restore, std::move(arriving.ram), VmCallbacks{});
  lock.lock();
  cv.wait_for(lock, std::chrono::seconds(60), [&] { return incoming.Stats().state_ready || over(); });
  lock.unlock();
  if (!incoming.Stats().state_ready)
    throw VmmError(ErrorCode::kState, "migration over " + uri + " failed: " + migration.Stats().error + incoming.Stats().error);
  destination.LoadArrivedState(incoming.TakeState().snapshot);
  observer.SetDestination(destination);
  destination.Start(!incoming.Stats().source_running);
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
  return {stall, Ms(t0, t1), stats.downtime_ms, stats.rounds, stats.dirty_rate, stats.throttle_percent, stats.downtime_phases};
}

// The longest standstill over `ms` of a guest nothing is done to, and its count rate meanwhile.
struct Anchor {
  double stall_ms, counts_per_s;
};
Anchor NoiseFloor(const std::string& dir, const Guest& guest, double ms) {
  auto vm = StartGuest(dir, guest);
  StallObserver observer(*vm);
  uint64_t c0 = *CounterIn(*vm);
  auto t0 = Clock::now();
  usleep(static_cast<useconds_t>(ms * 1000));
  uint64_t c1 = *CounterIn(*vm);
  double rate = static_cast<double>(c1 - c0) / (Ms(t0, Clock::now()) / 1000);
  double floor = observer.Stop();
  vm->Stop();
  return {floor, rate};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

// One JSON line: `runs` moves of `guest` over `transport`, each beside an anchor run.
void Measure(const std::string& dir, const Guest& guest, const std::string& transport, int runs) {
  std::vector<double> stall, total, vmm, floor, dirty, written;
  std::vector<double> pause, final_ram, save_state, destination;  // the VMM downtime's phases
  double rounds = 0;
  uint32_t throttle = 0;
  for (int i = 0; i < runs; i++) {  // interleaved with the anchor, so drift hits both alike
    std::string uri = transport == "unix" ? "unix:" + dir + "/migrate.sock" : "tcp:127.0.0.1:0";
    Move m = MoveOnce(StartGuest(dir, guest), dir, uri);
    stall.push_back(m.stall_ms);
    total.push_back(m.total_ms);
    vmm.push_back(static_cast<double>(m.vmm_downtime_ms));
    pause.push_back(m.phases.pause_us / 1000.0);
    final_ram.push_back(m.phases.final_ram_us / 1000.0);
    save_state.push_back(m.phases.save_state_us / 1000.0);
    destination.push_back(m.phases.destination_us / 1000.0);
    dirty.push_back(static_cast<double>(m.dirty_rate) / (1 << 20));
    rounds += static_cast<double>(m.rounds);
    throttle = std::max(throttle, m.throttle_percent);
    Anchor a = NoiseFloor(dir, guest, m.total_ms);
    floor.push_back(a.stall_ms);
    written.push_back(guest.dirty_mib_per_s > 0 ? a.counts_per_s * 4096 / (1 << 20) : 0);  // a page per count
  }
  double s = Median(stall), f = Median(floor);
  printf("{\"figure\":\"vmm_migration_%s\",\"transport\":\"%s\",\"mib\":%llu,\"runs\":%d,"
         "\"dirty_mib_per_s_paced\":%.0f,\"dirty_mib_per_s_written\":%.1f,\"dirty_mib_per_s_last_round_median\":%.1f,"
         "\"guest_stall_ms_median\":%.2f,\"guest_stall_ms_max\":%.2f,\"vmm_downtime_ms_median\":%.1f,"
         "\"vmm_downtime_phases_ms_median\":{\"pause\":%.2f,\"final_ram\":%.2f,\"save_state\":%.2f,\"destination\":%.2f},"
         "\"total_ms_median\":%.1f,\"rounds_mean\":%.1f,\"throttle_percent_max\":%u,"
         "\"anchor_no_migration_stall_ms_median\":%.2f,\"ratio_to_anchor\":%.2f,\"goal_ms\":%.0f,\"meets_goal\":%s}\n",
         guest.name.c_str(), transport.c_str(), static_cast<unsigned long long>(kMemory >> 20), runs, guest.dirty_mib_per_s,
         Median(written), Median(dirty), s, *std::max_element(stall.begin(), stall.end()), Median(vmm), Median(pause),
         Median(final_ram), Median(save_state), Median(destination), Median(total), rounds / runs, throttle, f,
         s / std::max(f, 0.001), kGoalMs, s <= kGoalMs ? "true" : "false");
  fflush(stdout);
}

int main(int argc, char** argv) {
  int runs = argc > 1 ? std::max(3, atoi(argv[1])) : 7;
  char tmpl[] = "/dev/shm/stencil-migration-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return perror("mkdtemp"), 1;
  std::string dir = tmpl;
  try {
    namespace tg = stencil::testing;
    Guest idle{"idle", dir + "/idle.elf", 1000000, 0};
    tg::WriteCounterGuest(idle.kernel);
    Guest dirtying{"dirtying", dir + "/dirtying.elf", 1000, kDirtyMibPerS};
    uint64_t pages_per_s = static_cast<uint64_t>(kDirtyMibPerS * 256);
    tg::WriteCounterGuest(dirtying.kernel, true, static_cast<uint32_t>(tg::MeasureTscHz() / pages_per_s),
                          tg::UserAccessPreamble(kDirtyRangeBase + (uint64_t{kDirtyRangePages} << 12)),
                          {kDirtyRangeBase, kDirtyRangePages});
    for (const Guest& guest : {idle, dirtying})
      for (const std::string transport : {"unix", "tcp"}) Measure(dir, guest, transport, runs);
  } catch (const std::exception& e) {
    fprintf(stderr, "migration-bench: %s\n", e.what());
    std::filesystem::remove_all(dir);
    return 1;
  }
  std::filesystem::remove_all(dir);
  return 0;
}
