// Save and restore on this machine's /dev/kvm: a counting CPL3 guest is paused, saved as a
// template (RAM stays in its tmpfs file), and cloned copy-on-write; clones continue from the
// saved count and the template's memory file never changes. Skipped where /dev/kvm is missing.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "../src/error.h"
#include "../src/kvm.h"
#include "../src/snapshot/sha256.h"
#include "../src/snapshot/snapshot.h"
#include "../src/vm.h"
#include "counter_guest.h"

using namespace stencil;
using namespace std::chrono_literals;

namespace {

class PauseWaiter {
 public:
  VmCallbacks Callbacks() {
    VmCallbacks cb;
    cb.paused = [this] {
      std::lock_guard<std::mutex> lock(mu_);
      paused_++;
      cv_.notify_all();
    };
    return cb;
  }
  bool WaitPaused(int count) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return paused_ >= count; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int paused_ = 0;
};

uint64_t Counter(const Vm& vm) {
  return __atomic_load_n(reinterpret_cast<uint64_t*>(vm.memory().Translate(stencil::testing::kCounterAddr, 8)), __ATOMIC_SEQ_CST);
}

bool WaitCounterAbove(const Vm& vm, uint64_t value) {
  for (int i = 0; i < 1000; i++) {
    if (Counter(vm) > value) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

class SnapshotKvm : public stencil::testing::CounterGuestTest {
 protected:
  SnapshotKvm() : CounterGuestTest("snapshot-test", false) {}
  VmConfig Config(const std::string& ram_dir, const std::string& ram_name) {
    VmConfig c = CounterVmConfig(ram_name);
    c.memory.directory = ram_dir;
    return c;
  }
};

TEST_F(SnapshotKvm, PausedGuestStopsCountingAndResumes) {
  PauseWaiter waiter;
  Vm vm(Config(dir_, "ram"), waiter.Callbacks());
  vm.Start();
  ASSERT_TRUE(WaitCounterAbove(vm, 1000)) << "the CPL3 guest never counted";
  vm.RequestPause();
  ASSERT_TRUE(waiter.WaitPaused(1));
  uint64_t paused_at = Counter(vm);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(Counter(vm), paused_at);
  vm.Resume();
  EXPECT_TRUE(WaitCounterAbove(vm, paused_at));
}

TEST_F(SnapshotKvm, CloneContinuesFromSavedCounterAndTemplateFileNeverChanges) {
  std::string snap = dir_ + "/template";
  ASSERT_EQ(mkdir(snap.c_str(), 0700), 0);
  uint64_t saved;
  {
    PauseWaiter waiter;
    Vm vm(Config(dir_, "template-ram"), waiter.Callbacks());  // RAM elsewhere: saved by a hard link
    vm.Start();
    ASSERT_TRUE(WaitCounterAbove(vm, 100000));
    EXPECT_THROW(vm.SaveSnapshot(snap), VmmError);  // running
    vm.RequestPause();
    ASSERT_TRUE(waiter.WaitPaused(1));
    saved = Counter(vm);
    vm.SaveSnapshot(snap);
    try {
      vm.Resume();
      ADD_FAILURE() << "a template resumed";
    } catch (const VmmError& e) {
      EXPECT_EQ(e.code(), ErrorCode::kState);
    }
  }
  std::string memory = snap + "/memory";
  std::string before = Sha256FileHex(memory);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/template-ram"));  // the template VM's own name is gone
  for (const auto& entry : std::filesystem::directory_iterator(snap))
    EXPECT_TRUE(entry.path().filename() == "state" || entry.path().filename() == "config" || entry.path().filename() == "memory")
        << "left behind: " << entry.path();

  Snapshot snapshot = ReadSnapshot(snap);
  EXPECT_EQ(snapshot.config.vm.vcpus, 1u);
  EXPECT_EQ(snapshot.config.kernel_sha256, Sha256FileHex(kernel_));
  EXPECT_GT(snapshot.vcpus.at(0).msrs.size(), 5u);

  RestoreOptions options;
  options.snapshot_dir = snap;
  PauseWaiter waiter_a, waiter_b;
  Vm clone_a(VmShell::Create(1), snapshot, options, waiter_a.Callbacks());  // registers RAM itself
  Vm clone_b(VmShell::Create(1, 64ULL << 20), snapshot, options, waiter_b.Callbacks());  // RAM slot ahead
  EXPECT_EQ(Counter(clone_a), saved);  // the template's RAM, before the clone runs
  clone_a.Start();
  clone_b.Start(/*paused=*/true);
  ASSERT_TRUE(WaitCounterAbove(clone_a, saved)) << "the clone did not continue";
  ASSERT_TRUE(waiter_b.WaitPaused(1));
  EXPECT_EQ(Counter(clone_b), saved);  // started paused: not one instruction ran
  clone_b.Resume();
  ASSERT_TRUE(WaitCounterAbove(clone_b, saved + 1000));
  clone_a.RequestPause();
  ASSERT_TRUE(waiter_a.WaitPaused(1));
  EXPECT_THROW(clone_a.SaveSnapshot(dir_), VmmError);  // a clone is not a template
  clone_a.Stop();
  clone_b.Stop();
  EXPECT_EQ(Sha256FileHex(memory), before);
}

TEST_F(SnapshotKvm, RestoreRefusesMismatchedRequests) {
  std::string snap = dir_;
  {
    PauseWaiter waiter;
    Vm vm(Config(dir_, "memory"), waiter.Callbacks());  // RAM already is the snapshot's memory
    vm.Start();
    ASSERT_TRUE(WaitCounterAbove(vm, 10));
    vm.RequestPause();
    ASSERT_TRUE(waiter.WaitPaused(1));
    vm.SaveSnapshot(snap);
  }
  ASSERT_TRUE(std::filesystem::exists(snap + "/memory"));  // kept after the template VM is gone
  Snapshot snapshot = ReadSnapshot(snap);
  RestoreOptions options;
  options.snapshot_dir = snap;
  options.expect_vcpus = 2;
  try {
    Vm vm(VmShell::Create(1), snapshot, options, {});
    ADD_FAILURE() << "restored with a vCPU count mismatch";
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("vCPU count"), std::string::npos) << e.what();
  }
  options.expect_vcpus = 0;
  options.expect_memory = 128ULL << 20;
  EXPECT_THROW(Vm(VmShell::Create(1), snapshot, options, {}), VmmError);
  options.expect_memory = 0;
  options.vsock_guest_cid = 9;  // the snapshot has no vsock device
  EXPECT_THROW(Vm(VmShell::Create(1), snapshot, options, {}), VmmError);
  options.vsock_guest_cid = 0;
  EXPECT_THROW(Vm(VmShell::Create(2), snapshot, options, {}), VmmError);  // shell of another size
  EXPECT_THROW(Vm(VmShell::Create(1, 32ULL << 20), snapshot, options, {}), VmmError);
}

}  // namespace
