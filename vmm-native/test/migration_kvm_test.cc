// Live migration on this machine's /dev/kvm between two VMs in this process: a CPL3 guest that
// counts and keeps 256 pages dirty (each holding a count that names its page) moves over unix
// and tcp sockets and counts on at the destination; cancel, a destination gone, a refusal and a
// link too slow to converge leave the source running. Skipped where /dev/kvm is missing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "../src/error.h"
#include "../src/kvm.h"
#include "../src/migration/destination.h"
#include "../src/migration/source.h"
#include "../src/snapshot/snapshot.h"
#include "../src/vm.h"
#include "counter_guest.h"

using namespace stencil;
using namespace std::chrono_literals;
namespace tg = stencil::testing;

namespace {

constexpr uint64_t kTemplateDataAddr = 16ULL << 20;
constexpr uint64_t kTemplateDataBytes = 8ULL << 20;

uint64_t Load(const Vm& vm, uint64_t addr) {
  return __atomic_load_n(reinterpret_cast<uint64_t*>(vm.memory().Translate(addr, 8)), __ATOMIC_SEQ_CST);
}

bool WaitCounterAbove(const Vm& vm, uint64_t value) {
  for (int i = 0; i < 1000; i++) {
    if (Load(vm, tg::kCounterAddr) > value) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

// Every pattern page holds 0 or a count no larger than the counter whose low byte is its index
// (the counter is read after the pages: a running guest only counts up).
std::string PatternProblem(const Vm& vm) {
  std::vector<uint64_t> values;
  for (uint64_t i = 0; i < tg::kPatternPages; i++) values.push_back(Load(vm, tg::kPatternAddr + i * 4096));
  uint64_t counter = Load(vm, tg::kCounterAddr);
  for (uint64_t i = 0; i < tg::kPatternPages; i++) {
    uint64_t v = values[i];
    if (v != 0 && ((v & 0xff) != i || v > counter))
      return "page " + std::to_string(i) + " holds " + std::to_string(v) + " (counter " + std::to_string(counter) + ")";
  }
  return "";
}

// Waits for a status callback to satisfy `done`.
class Signal {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    count_++;
    cv_.notify_all();
  }
  template <typename F>
  bool Wait(F done, std::chrono::milliseconds timeout = 20s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, done);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

class MigrationKvm : public tg::CounterGuestTest {
 protected:
  MigrationKvm() : CounterGuestTest("migration-test", true) {}
  std::unique_ptr<Vm> StartSource(VmCallbacks cb = {}, uint64_t min_count = 100000) {
    auto vm = std::make_unique<Vm>(CounterVmConfig("source-ram"), std::move(cb));
    vm->Start();
    EXPECT_TRUE(WaitCounterAbove(*vm, min_count)) << "the CPL3 guest never counted";
    return vm;
  }
  IncomingOptions Incoming() {
    IncomingOptions o;
    o.memory_dir = dir_;
    o.memory_name = "destination-ram";
    return o;
  }
  // Runs a migration to `uri` and, when the stream arrives, builds and starts the destination VM.
  struct Outcome {
    MigrationStats source;
    IncomingStats destination;
    std::unique_ptr<Vm> vm;
  };
  Outcome Migrate(Vm& source, const std::string& listen_uri, MigrationParameters params = {}, IncomingOptions options = {}) {
    if (options.memory_name.empty()) options = Incoming();
    Signal incoming_signal, source_signal;
    MigrationIncoming incoming(ParseMigrationEndpoint(listen_uri), options, [&](MigrationIncoming::Event) { incoming_signal.Notify(); });
    MigrationEndpoint to = incoming.listener().endpoint();
    if (to.kind == MigrationEndpoint::Kind::kTcp) to.host = "127.0.0.1";
    incoming.Start();
    MigrationSource migration(source, to, params, [&](MigrationStatus) { source_signal.Notify(); });
    migration.Start();
    Outcome out;
    incoming_signal.Wait([&] {
      IncomingStats s = incoming.Stats();
      return s.state_ready || s.status == MigrationStatus::kFailed || s.status == MigrationStatus::kCancelled;
    });
    if (incoming.Stats().state_ready) {
      ArrivingVm arriving = incoming.TakeArriving();
      ReceivedState state = incoming.TakeState();
      out.vm = std::make_unique<Vm>(std::move(arriving.shell), arriving.description, options.restore, std::move(arriving.ram),
                                    VmCallbacks{});
      out.vm->LoadArrivedState(state.snapshot);
      out.vm->Start(!state.running);
      incoming.Complete();
    }
    EXPECT_TRUE(source_signal.Wait([&] { return migration.finished(); }, 60s)) << "the migration never finished";
    incoming_signal.Wait([&] { return incoming.Stats().status != MigrationStatus::kActive; });
    out.source = migration.Stats();
    out.destination = incoming.Stats();
    return out;
  }
  // A clone of a template made from a running source that was given 8 MiB of data (which the
  // clone only reads), counting.
  std::unique_ptr<Vm> StartClone() {
    auto vm = StartSource();
    EXPECT_TRUE(vm->PauseAndWait(10s));
    std::memset(vm->memory().Translate(kTemplateDataAddr, kTemplateDataBytes), 0x5a, kTemplateDataBytes);
    std::string template_dir = dir_ + "/template";
    std::filesystem::create_directory(template_dir);
    vm->SaveSnapshot(template_dir);
    vm.reset();
    Snapshot snapshot = ReadSnapshot(template_dir);
    RestoreOptions restore;
    restore.snapshot_dir = template_dir;
    auto clone = std::make_unique<Vm>(VmShell::Create(1, snapshot.config.vm.memory.size), snapshot, restore, VmCallbacks{});
    clone->Start();
    EXPECT_TRUE(WaitCounterAbove(*clone, Load(*clone, tg::kCounterAddr)));
    return clone;
  }
};

void ExpectMoved(Vm& source, const MigrationStats& stats, Vm* destination) {
  ASSERT_EQ(MigrationStatusName(stats.status), std::string("completed")) << stats.error;
  ASSERT_NE(destination, nullptr);
  EXPECT_TRUE(source.paused()) << "the source must stay paused after completion";
  uint64_t at_switch = Load(source, tg::kCounterAddr);
  EXPECT_EQ(Load(*destination, tg::kCounterAddr) >= at_switch, true) << "the count went back";
  EXPECT_TRUE(WaitCounterAbove(*destination, at_switch)) << "the destination does not count on";
  EXPECT_EQ(PatternProblem(*destination), "");
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(Load(source, tg::kCounterAddr), at_switch) << "the source ran on";
  printf("  moved: %llu KiB sent, %llu pages + %llu zero, %llu rounds, downtime %lld ms, total %lld ms\n",
         static_cast<unsigned long long>(stats.transferred >> 10), static_cast<unsigned long long>(stats.pages_sent),
         static_cast<unsigned long long>(stats.zero_pages), static_cast<unsigned long long>(stats.rounds),
         static_cast<long long>(stats.downtime_ms), static_cast<long long>(stats.total_time_ms));
}

TEST_F(MigrationKvm, MovesOverUnixSocketAndCountsOn) {
  auto source = StartSource();
  Outcome out = Migrate(*source, "unix:" + dir_ + "/migrate.sock");
  ExpectMoved(*source, out.source, out.vm.get());
  EXPECT_EQ(MigrationStatusName(out.destination.status), std::string("completed"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/migrate.sock")) << "the listening socket is left behind";
}

TEST_F(MigrationKvm, MovesOverTcpLoopback) {
  auto source = StartSource();
  Outcome out = Migrate(*source, "tcp:127.0.0.1:0");
  ExpectMoved(*source, out.source, out.vm.get());
}

TEST_F(MigrationKvm, CancelLeavesTheSourceRunning) {
  auto source = StartSource();
  Signal incoming_signal, source_signal;
  MigrationIncoming incoming(ParseMigrationEndpoint("unix:" + dir_ + "/m.sock"), Incoming(),
                             [&](MigrationIncoming::Event) { incoming_signal.Notify(); });
  incoming.Start();
  MigrationParameters params;
  params.max_bandwidth = 128 << 10;  // the first pass takes seconds
  MigrationSource migration(*source, incoming.listener().endpoint(), params, [&](MigrationStatus) { source_signal.Notify(); });
  migration.Start();
  ASSERT_TRUE(source_signal.Wait([&] { return migration.Stats().status == MigrationStatus::kActive; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(migration.Cancel());
  ASSERT_TRUE(source_signal.Wait([&] { return migration.finished(); }));
  EXPECT_EQ(MigrationStatusName(migration.Stats().status), std::string("cancelled"));
  uint64_t now = Load(*source, tg::kCounterAddr);
  EXPECT_TRUE(WaitCounterAbove(*source, now)) << "the source stopped counting";
  EXPECT_EQ(PatternProblem(*source), "");
  ASSERT_TRUE(incoming_signal.Wait([&] { return incoming.Stats().status == MigrationStatus::kFailed; }));
  EXPECT_NE(incoming.Stats().error.find("closed the connection"), std::string::npos) << incoming.Stats().error;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/destination-ram")) << "the destination kept the RAM it received";
}

TEST_F(MigrationKvm, DestinationGoneMidWayFailsAndSourceRuns) {
  auto source = StartSource();
  Signal source_signal;
  auto incoming = std::make_unique<MigrationIncoming>(ParseMigrationEndpoint("unix:" + dir_ + "/m.sock"), Incoming(), nullptr);
  incoming->Start();
  MigrationParameters params;
  params.max_bandwidth = 128 << 10;
  MigrationSource migration(*source, incoming->listener().endpoint(), params, [&](MigrationStatus) { source_signal.Notify(); });
  migration.Start();
  ASSERT_TRUE(source_signal.Wait([&] { return migration.Stats().status == MigrationStatus::kActive; }));
  std::this_thread::sleep_for(300ms);
  incoming.reset();  // the destination goes away mid-stream
  ASSERT_TRUE(source_signal.Wait([&] { return migration.finished(); }));
  MigrationStats stats = migration.Stats();
  EXPECT_EQ(MigrationStatusName(stats.status), std::string("failed"));
  EXPECT_NE(stats.error.find("sending the migration stream"), std::string::npos) << stats.error;
  uint64_t now = Load(*source, tg::kCounterAddr);
  EXPECT_TRUE(WaitCounterAbove(*source, now));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/destination-ram"));
}

TEST_F(MigrationKvm, ArrivingVmIsBuiltWhileRamStreamsAndAFailureThenStopsTheStream) {
  auto source = StartSource();
  Signal incoming_signal, source_signal;
  bool accepted = false;
  MigrationIncoming incoming(ParseMigrationEndpoint("unix:" + dir_ + "/m.sock"), Incoming(), [&](MigrationIncoming::Event e) {
    if (e == MigrationIncoming::Event::kAccepted) accepted = true;
    incoming_signal.Notify();
  });
  incoming.Start();
  MigrationParameters params;
  params.max_bandwidth = 1 << 20;  // the guest's 256 pages a round need 1 s: it goes on for a while
  MigrationSource migration(*source, incoming.listener().endpoint(), params, [&](MigrationStatus) { source_signal.Notify(); });
  migration.Start();
  ASSERT_TRUE(incoming_signal.Wait([&] { return accepted; }));
  EXPECT_THROW(incoming.TakeState(), VmmError) << "a state before the stream ended";
  bool exited = false;
  {
    ArrivingVm arriving = incoming.TakeArriving();
    EXPECT_THROW(incoming.TakeArriving(), VmmError) << "taken twice";
    VmCallbacks cb;
    cb.exited = [&](ExitReason, const std::string&) { exited = true; };
    Vm vm(std::move(arriving.shell), arriving.description, Incoming().restore, std::move(arriving.ram), std::move(cb));
    EXPECT_TRUE(vm.awaiting_state());
    try {
      vm.Start();
      ADD_FAILURE() << "an arriving VM started without its state";
    } catch (const VmmError& e) {
      EXPECT_NE(std::string(e.what()).find("final state has not been loaded"), std::string::npos) << e.what();
    }
    // Its vCPU threads, made ahead, end with it; a VM that never ran reports no exit.
  }
  EXPECT_FALSE(exited);
  incoming.Fail("the owner could not build the VM");
  ASSERT_TRUE(source_signal.Wait([&] { return migration.finished(); }));
  EXPECT_EQ(MigrationStatusName(migration.Stats().status), std::string("failed"));
  EXPECT_NE(migration.Stats().error.find("the destination failed: the owner could not build the VM"), std::string::npos)
      << migration.Stats().error;
  ASSERT_TRUE(incoming_signal.Wait([&] { return incoming.Stats().status == MigrationStatus::kFailed; }));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/destination-ram")) << "the destination kept the RAM it received";
  EXPECT_TRUE(WaitCounterAbove(*source, Load(*source, tg::kCounterAddr))) << "the source stopped counting";
  EXPECT_EQ(PatternProblem(*source), "");
}

TEST_F(MigrationKvm, DestinationRefusesAnotherMemorySizeBeforeTakingAnything) {
  auto source = StartSource();
  IncomingOptions options = Incoming();
  options.restore.expect_memory = 128ULL << 20;
  Outcome out = Migrate(*source, "unix:" + dir_ + "/m.sock", {}, options);
  EXPECT_EQ(MigrationStatusName(out.source.status), std::string("failed"));
  EXPECT_NE(out.source.error.find("refused the migration: memory size differs: the stream's VM has 67108864 bytes"),
            std::string::npos)
      << out.source.error;
  EXPECT_EQ(MigrationStatusName(out.destination.status), std::string("failed"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/destination-ram"));
  EXPECT_FALSE(source->paused());
  EXPECT_TRUE(WaitCounterAbove(*source, Load(*source, tg::kCounterAddr)));
}

TEST_F(MigrationKvm, TooSlowALinkFailsWithoutThrottle) {
  auto source = StartSource();
  MigrationParameters params;
  params.max_bandwidth = 1 << 20;  // 256 dirty pages per round need ~1 s: far above 50 ms
  params.max_rounds = 2;
  params.throttle = false;
  Outcome out = Migrate(*source, "unix:" + dir_ + "/m.sock", params);
  EXPECT_EQ(MigrationStatusName(out.source.status), std::string("failed"));
  EXPECT_NE(out.source.error.find("did not converge in 2 rounds"), std::string::npos) << out.source.error;
  EXPECT_EQ(out.vm, nullptr);
  EXPECT_TRUE(WaitCounterAbove(*source, Load(*source, tg::kCounterAddr)));
  EXPECT_EQ(PatternProblem(*source), "");
}

TEST_F(MigrationKvm, AGuestOutrunningTheLinkConvergesWhenThrottled) {
  // ~2000 page writes a second (pace from the TSC) against a 2 MiB/s link (512 pages a second):
  // rounds never shrink until the throttle slows the vCPU below the link's rate. Even at 99% the
  // guest writes once each time its vCPU wakes (its TSC deadline passed while it slept): ~100
  // pages a second. A round also costs a fixed time (the dirty log, the stream), longer on some
  // hosts (~0.25 s on a PVM host): with a 1 MiB/s link and a 50 ms budget the rounds settled at
  // 32-50 pages there, never converging. The budget here is 200 ms (100 pages at this link).
  tg::WriteCounterGuest(kernel_, true, static_cast<uint32_t>(tg::MeasureTscHz() / 2000));
  auto source = StartSource({}, 500);
  MigrationParameters params;
  params.max_bandwidth = 2 << 20;
  params.downtime_limit = std::chrono::milliseconds(200);
  params.max_rounds = 3;
  params.throttle = true;
  params.throttle_initial = 50;
  params.throttle_increment = 20;
  Outcome out = Migrate(*source, "unix:" + dir_ + "/m.sock", params);
  ExpectMoved(*source, out.source, out.vm.get());
  EXPECT_GT(out.source.rounds, 3u) << "it converged before the throttle was needed";
  EXPECT_EQ(out.source.throttle_percent, 0u) << "the throttle must be off after the migration";
}

TEST_F(MigrationKvm, CloneMovesWithoutItsTemplatePagesWhenTheDestinationHasTheTemplate) {
  auto clone = StartClone();
  Outcome out = Migrate(*clone, "unix:" + dir_ + "/m.sock");
  ExpectMoved(*clone, out.source, out.vm.get());
  if (!out.vm) return;
  EXPECT_TRUE(out.source.template_shared);
  EXPECT_TRUE(out.vm->memory().copy_on_write()) << "the destination should map the same template";
  // Only the pages the clone wrote (counter + pattern + stack, in the first pass and again in
  // the last round) travel, never the template's 2048 pages of data.
  EXPECT_LT(out.source.pages_sent, 3 * tg::kPatternPages) << out.source.pages_sent;
}

TEST_F(MigrationKvm, CloneMovesInFullWhenTheDestinationLacksTheTemplate) {
  auto clone = StartClone();
  IncomingOptions options = Incoming();
  options.use_template = false;
  Outcome out = Migrate(*clone, "unix:" + dir_ + "/m.sock", {}, options);
  ExpectMoved(*clone, out.source, out.vm.get());
  if (!out.vm) return;
  EXPECT_FALSE(out.source.template_shared);
  EXPECT_FALSE(out.vm->memory().copy_on_write());
  EXPECT_GT(out.source.pages_sent, kTemplateDataBytes / 4096) << "the template's data must travel too";
  const uint8_t* data = out.vm->memory().Translate(kTemplateDataAddr, kTemplateDataBytes);
  EXPECT_EQ(data[0], 0x5a);
  EXPECT_EQ(data[kTemplateDataBytes - 1], 0x5a);
}

}  // namespace
