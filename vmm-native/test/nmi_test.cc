// Vm::InjectNmi (QMP inject-nmi) on this machine's /dev/kvm: the counting CPL3 guest has no NMI
// handler (its boot IDT is one empty entry), so a delivered NMI ends it in a triple fault, which
// is how the test sees the NMI arrive. A VM that is not running refuses by name.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "../src/error.h"
#include "../src/vm.h"
#include "counter_guest.h"

using namespace stencil;
using namespace std::chrono_literals;

namespace {

class Nmi : public stencil::testing::CounterGuestTest {
 protected:
  Nmi() : CounterGuestTest("nmi-test", false) {}
};

uint64_t Counter(const Vm& vm) {
  return __atomic_load_n(reinterpret_cast<uint64_t*>(vm.memory().Translate(stencil::testing::kCounterAddr, 8)), __ATOMIC_SEQ_CST);
}

TEST_F(Nmi, ReachesEveryVcpuOfARunningGuest) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<ExitReason> exit;
  VmCallbacks cb;
  cb.exited = [&](ExitReason r, const std::string&) {
    std::lock_guard<std::mutex> lock(mu);
    exit = r;
    cv.notify_all();
  };
  Vm vm(CounterVmConfig("ram", 2), cb);
  EXPECT_THROW(vm.InjectNmi(), VmmError);  // not started
  vm.Start();
  for (int i = 0; i < 1000 && Counter(vm) < 1000; i++) std::this_thread::sleep_for(10ms);
  ASSERT_GE(Counter(vm), 1000u) << "the CPL3 guest never counted";
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_FALSE(cv.wait_for(lock, 200ms, [&] { return exit.has_value(); })) << "the guest ended before any NMI";
  }
  vm.InjectNmi();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return exit.has_value(); })) << "the NMI never reached the guest";
    EXPECT_EQ(*exit, ExitReason::kTripleFault) << ExitReasonName(*exit);
  }
  vm.Stop();
  try {
    vm.InjectNmi();
    ADD_FAILURE() << "a finished VM took an NMI";
  } catch (const VmmError& e) {
    EXPECT_STREQ(e.what(), "VM is not running");
  }
}

}  // namespace
