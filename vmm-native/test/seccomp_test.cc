// The VMM threads' seccomp allow-lists (src/host/seccomp.h) and how VMM threads start
// (src/vmm_thread.h). Filters are process-wide once enabled and cannot be lifted, so each test
// that enables them runs in a child process (a gtest death test) and says how it ended.
#include <fcntl.h>
#include <linux/capability.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "../src/host/seccomp.h"
#include "../src/vm.h"
#include "../src/vmm_thread.h"
#include "counter_guest.h"

using namespace stencil;
using namespace std::chrono_literals;

namespace {

constexpr ThreadRole kRoles[] = {ThreadRole::kVcpu,      ThreadRole::kDevice,    ThreadRole::kBlockIo,
                                 ThreadRole::kFileShare, ThreadRole::kMigration, ThreadRole::kThrottle};

// STENCIL_TEST_SECCOMP=1 runs the whole suite with filters on (make -C vmm-native test does both):
// every device, migration and VM test then has its threads confined, as the product runs them.
const bool kWholeSuiteConfined = [] {
  const char* v = getenv("STENCIL_TEST_SECCOMP");
  if (!v || std::string(v) != "1") return false;
  class Confined : public ::testing::Environment {
    void SetUp() override { seccomp::Enable(); }
  };
  ::testing::AddGlobalTestEnvironment(new Confined);
  return true;
}();

bool Allows(ThreadRole role, long nr) {
  std::vector<long> list = seccomp::AllowedSyscalls(role);
  return std::find(list.begin(), list.end(), nr) != list.end();
}

TEST(Seccomp, NoThreadMayStartAProgramOrAProcessOrLeaveItsNamespacesOrPrivileges) {
  const long forbidden[] = {SYS_execve,       SYS_execveat, SYS_fork,       SYS_vfork,        SYS_clone,
                            SYS_clone3,       SYS_ptrace,   SYS_mount,      SYS_umount2,      SYS_pivot_root,
                            SYS_chroot,       SYS_setns,    SYS_unshare,    SYS_init_module,  SYS_finit_module,
                            SYS_kexec_load,   SYS_bpf,      SYS_reboot,     SYS_setuid,       SYS_setresuid,
                            SYS_capset,       SYS_keyctl,   SYS_perf_event_open, SYS_process_vm_writev, SYS_prctl,
                            SYS_seccomp,      SYS_kill};
  for (ThreadRole role : kRoles)
    for (long nr : forbidden) EXPECT_FALSE(Allows(role, nr)) << ThreadRoleName(role) << " allows system call " << nr;
}

TEST(Seccomp, EachKindOfThreadGetsTheCallsOfItsOwnWork) {
  EXPECT_TRUE(Allows(ThreadRole::kVcpu, SYS_ioctl));  // KVM_RUN
  EXPECT_FALSE(Allows(ThreadRole::kVcpu, SYS_openat));
  EXPECT_TRUE(Allows(ThreadRole::kDevice, SYS_accept4));  // vsock's host side
  EXPECT_TRUE(Allows(ThreadRole::kDevice, SYS_epoll_wait));
  EXPECT_FALSE(Allows(ThreadRole::kDevice, SYS_openat));
  EXPECT_TRUE(Allows(ThreadRole::kBlockIo, SYS_pwrite64));
  EXPECT_FALSE(Allows(ThreadRole::kBlockIo, SYS_openat));
  EXPECT_FALSE(Allows(ThreadRole::kBlockIo, SYS_socket));
  EXPECT_TRUE(Allows(ThreadRole::kFileShare, SYS_openat));
  EXPECT_TRUE(Allows(ThreadRole::kFileShare, SYS_renameat2));
  EXPECT_FALSE(Allows(ThreadRole::kFileShare, SYS_socket));
  EXPECT_FALSE(Allows(ThreadRole::kFileShare, SYS_connect));
  EXPECT_TRUE(Allows(ThreadRole::kMigration, SYS_sendto));
  EXPECT_TRUE(Allows(ThreadRole::kThrottle, SYS_tgkill));  // the vCPU kick
  EXPECT_FALSE(Allows(ThreadRole::kThrottle, SYS_ioctl));
  EXPECT_FALSE(Allows(ThreadRole::kThrottle, SYS_socket));
}

TEST(Seccomp, ThreadsStartUnconfinedWhileFiltersAreOff) {
  if (kWholeSuiteConfined) GTEST_SKIP() << "filters are on for the whole suite";
  bool confined = true;
  StartVmmThread("not-confined", ThreadRole::kVcpu, [&] { confined = seccomp::CurrentThreadConfined(); }).join();
  EXPECT_FALSE(confined);
  EXPECT_FALSE(seccomp::Enabled());
}

class SeccompDeathTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(SeccompDeathTest, AForbiddenCallEndsTheProcessWithAMessageNamingTheThreadAndTheCall) {
  EXPECT_EXIT(
      {
        seccomp::Enable();
        StartVmmThread("device", ThreadRole::kDevice, [] { open("/proc/self/status", O_RDONLY); }).join();
        _exit(0);
      },
      ::testing::ExitedWithCode(128 + SIGSYS), "a device event loop thread made system call 257, which its allow-list forbids");
  EXPECT_EXIT(
      {
        seccomp::Enable();
        StartVmmThread("vcpu", ThreadRole::kVcpu, [] { syscall(SYS_execve, "/bin/true", nullptr, nullptr); }).join();
        _exit(0);
      },
      ::testing::ExitedWithCode(128 + SIGSYS), "a vCPU thread made system call 59,");
}

TEST_F(SeccompDeathTest, AConfinedThreadStartsThreadsOfOtherKindsThatAreNotBoundByItsList) {
  // A vCPU activating a 9p share starts its worker: the worker may open files, the vCPU may not.
  EXPECT_EXIT(
      {
        seccomp::Enable();
        int fd = -1;
        bool vcpu_confined = false;
        StartVmmThread("vcpu", ThreadRole::kVcpu, [&] {
          vcpu_confined = seccomp::CurrentThreadConfined();
          StartVmmThread("9p-worker", ThreadRole::kFileShare, [&] { fd = open("/proc/self/status", O_RDONLY); }).join();
        }).join();
        _exit(vcpu_confined && fd >= 0 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// The calling thread's effective capabilities, a bit per CAP_*.
uint64_t EffectiveCapabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) return ~uint64_t{0};
  return data[0].effective | (uint64_t{data[1].effective} << 32);
}

TEST_F(SeccompDeathTest, EachThreadKeepsOnlyTheCapabilitiesItsWorkNeeds) {
  if (!(EffectiveCapabilities() & (uint64_t{1} << CAP_CHOWN))) GTEST_SKIP() << "not run as root: no capabilities to drop";
  EXPECT_EXIT(
      {
        seccomp::Enable();
        uint64_t device = ~uint64_t{0};
        uint64_t share = 0;
        StartVmmThread("device", ThreadRole::kDevice, [&] { device = EffectiveCapabilities(); }).join();
        StartVmmThread("9p", ThreadRole::kFileShare, [&] { share = EffectiveCapabilities(); }).join();
        bool ok = device == 0 && share == seccomp::KeptCapabilities(ThreadRole::kFileShare) &&
                  EffectiveCapabilities() != 0;  // the caller's (the addon's thread) are its own
        _exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

class SeccompVmDeathTest : public stencil::testing::CounterGuestTest {
 protected:
  SeccompVmDeathTest() : CounterGuestTest("seccomp-test", false) {}
  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    CounterGuestTest::SetUp();
  }
};

TEST_F(SeccompVmDeathTest, AGuestRunsPausesAndResumesOnConfinedVcpus) {
  EXPECT_EXIT(
      {
        seccomp::Enable();
        std::mutex mu;
        std::condition_variable cv;
        int paused = 0;
        VmCallbacks cb;
        cb.paused = [&] {
          std::lock_guard<std::mutex> lock(mu);
          paused++;
          cv.notify_all();
        };
        // The child ran this fixture's SetUp too ("threadsafe" death tests run the test again in
        // a new process): its scratch directory is its own to remove.
        auto exit_child = [&](int code) {
          std::filesystem::remove_all(dir_);
          _exit(code);
        };
        Vm vm(CounterVmConfig("ram", 2), cb);
        vm.Start();
        auto counter = [&] {
          return __atomic_load_n(reinterpret_cast<uint64_t*>(vm.memory().Translate(stencil::testing::kCounterAddr, 8)), __ATOMIC_SEQ_CST);
        };
        auto counts_past = [&](uint64_t v) {
          for (int i = 0; i < 1000 && counter() <= v; i++) std::this_thread::sleep_for(10ms);
          return counter() > v;
        };
        if (!counts_past(1000)) exit_child(2);
        vm.RequestPause();
        {
          std::unique_lock<std::mutex> lock(mu);
          if (!cv.wait_for(lock, 10s, [&] { return paused >= 1; })) exit_child(3);
        }
        uint64_t at = counter();
        vm.Resume();
        if (!counts_past(at)) exit_child(4);
        vm.Stop();
        exit_child(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
