// The VMM threads' seccomp allow-lists (src/host/seccomp.h) and how VMM threads start
// (src/vmm_thread.h). Filters are process-wide once enabled and cannot be lifted, so each test
// that enables them runs in a child process (a gtest death test) and says how it ended.
#include <fcntl.h>
#include <linux/capability.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>

#include "../src/kvm_headers.h"

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

TEST_F(SeccompDeathTest, ArgumentsAreCheckedWhereTheCallAloneSaysTooLittle) {
  struct Forbidden {
    ThreadRole role;
    std::function<void()> call;
    const char* report;
  };
  const Forbidden forbidden[] = {
      // A terminal's input queue (TIOCSTI), on whatever fd: not KVM's request.
      {ThreadRole::kVcpu, [] { char c = 'x'; ioctl(STDIN_FILENO, TIOCSTI, &c); }, "a vCPU thread made system call 16,"},
      {ThreadRole::kDevice, [] { int n; ioctl(STDERR_FILENO, FIONREAD, &n); }, "a device event loop thread made system call 16,"},
      // An IP socket: a device loop's sockets are Unix ones.
      {ThreadRole::kDevice, [] { socket(AF_INET, SOCK_STREAM, 0); }, "a device event loop thread made system call 41,"},
      {ThreadRole::kVcpu, [] { socket(AF_PACKET, SOCK_RAW, 0); }, "a vCPU thread made system call 41,"},
      // New executable code.
      {ThreadRole::kDevice, [] { mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); },
       "a device event loop thread made system call 9,"},
      {ThreadRole::kFileShare,
       [] {
         void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
         mprotect(p, 4096, PROT_READ | PROT_EXEC);
       },
       "a 9p worker thread made system call 10,"},
  };
  for (const Forbidden& f : forbidden) {
    EXPECT_EXIT(
        {
          seccomp::Enable();
          StartVmmThread("t", f.role, f.call).join();
          _exit(0);
        },
        ::testing::ExitedWithCode(128 + SIGSYS), f.report);
  }
}

TEST_F(SeccompDeathTest, AllowedArgumentsPass) {
  EXPECT_EXIT(
      {
        seccomp::Enable();
        int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        bool ok = false;
        StartVmmThread("vcpu", ThreadRole::kVcpu, [&] {
          int unix_socket = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
          void* rw = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
          ok = (kvm < 0 || ioctl(kvm, KVM_GET_API_VERSION, 0) == KVM_API_VERSION) && unix_socket >= 0 && rw != MAP_FAILED &&
               mprotect(rw, 4096, PROT_READ) == 0;
        }).join();
        bool migration_ok = false;
        StartVmmThread("migrate", ThreadRole::kMigration, [&] {
          int tcp = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
          void* x = mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);  // an NSS module's code
          migration_ok = tcp >= 0 && x != MAP_FAILED;
        }).join();
        _exit(ok && migration_ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(Seccomp, ArgumentRulesCoverEveryIoctlAndSocketAllowed) {
  for (ThreadRole role : kRoles) {
    std::vector<seccomp::ArgumentRule> rules = seccomp::ArgumentRules(role);
    auto has_rule = [&](long nr) {
      return std::any_of(rules.begin(), rules.end(), [&](const seccomp::ArgumentRule& r) { return r.nr == nr; });
    };
    for (long nr : {long{SYS_ioctl}, long{SYS_socket}})
      EXPECT_EQ(Allows(role, nr), has_rule(nr)) << ThreadRoleName(role) << ", system call " << nr;
    EXPECT_EQ(has_rule(SYS_mmap), role != ThreadRole::kMigration) << ThreadRoleName(role);
    for (const auto& r : rules) EXPECT_TRUE(Allows(role, r.nr)) << ThreadRoleName(role) << " has a rule for a call it may not make";
  }
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
