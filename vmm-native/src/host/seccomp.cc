#include "seccomp.h"

#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include "../error.h"
#include "../kvm_headers.h"
#include "../vmm_thread.h"

// A build with AddressSanitizer (the unit tests and fuzz targets): GCC names it with
// __SANITIZE_ADDRESS__, clang 14 only through __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define STENCIL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STENCIL_SANITIZED 1
#endif
#endif

namespace stencil {

const char* ThreadRoleName(ThreadRole role) {
  switch (role) {
    case ThreadRole::kVcpu: return "vCPU";
    case ThreadRole::kDevice: return "device event loop";
    case ThreadRole::kBlockIo: return "virtio-blk worker";
    case ThreadRole::kFileShare: return "9p worker";
    case ThreadRole::kMigration: return "migration";
    case ThreadRole::kThrottle: return "vCPU throttle";
  }
  return "?";
}

namespace seccomp {
namespace {

// The exit status of a process a thread ended by making a forbidden call: 128 + SIGSYS, as a shell
// reports a process killed by that signal.
constexpr int kForbiddenSyscallExit = 128 + SIGSYS;

std::atomic<bool> g_enabled{false};
thread_local const char* t_role = nullptr;  // set before the filter: the SIGSYS report reads it

// What every VMM thread needs: memory (malloc, thread stacks), locks and condition variables, time
// and sleeps, reading and writing fds it holds (eventfds, logs on stderr, the JS thread's wakeup),
// signals (the vCPU kick, pthread_kill), the host's RAM size glibc looks up (sysinfo; a migration
// thread met it), its own capabilities (capget, read only), and ending. The libc spellings of one
// call differ between glibc versions (stat is fstat, newfstatat or statx): all are listed.
const long kBase[] = {
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_close, SYS_futex, SYS_mmap, SYS_munmap, SYS_mprotect, SYS_mremap,
    SYS_madvise, SYS_brk, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack, SYS_clock_gettime, SYS_gettimeofday,
    SYS_clock_nanosleep, SYS_nanosleep, SYS_sched_yield, SYS_sched_getaffinity, SYS_getpid, SYS_gettid, SYS_tgkill,
    SYS_restart_syscall, SYS_exit, SYS_exit_group, SYS_set_robust_list, SYS_getrandom, SYS_fstat, SYS_newfstatat,
    SYS_lseek, SYS_fcntl, SYS_sysinfo, SYS_capget,
#ifdef SYS_rseq
    SYS_rseq,
#endif
#ifdef SYS_statx
    SYS_statx,
#endif
};

// KVM (KVM_RUN, interrupt lines, dirty logs) and its eventfds.
const long kKvm[] = {SYS_ioctl, SYS_eventfd2};

// A device's event loop, and the vCPU that activates a device (which builds its loop).
const long kEventLoop[] = {SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_wait, SYS_epoll_pwait, SYS_eventfd2, SYS_poll, SYS_ppoll};

// Unix and tap sockets: vsock's host side (accepting and connecting), virtio-net's tap.
const long kSockets[] = {SYS_socket,   SYS_connect,  SYS_accept4,    SYS_accept,     SYS_bind,       SYS_listen,
                         SYS_shutdown, SYS_sendto,   SYS_recvfrom,   SYS_sendmsg,    SYS_recvmsg,    SYS_getsockopt,
                         SYS_setsockopt, SYS_getsockname, SYS_getpeername};

// The vsock listener, rebound by the vCPU that reactivates the device after a driver reset: a
// stale socket file is looked at and removed, the new one made 0600.
const long kSocketFile[] = {SYS_lstat, SYS_stat, SYS_unlink, SYS_unlinkat, SYS_chmod, SYS_fchmodat};

// Positioned reads and writes and syncs of an open file (a disk image, a RAM file, a 9p fid).
const long kFileIo[] = {SYS_pread64, SYS_pwrite64, SYS_preadv, SYS_pwritev, SYS_fsync, SYS_fdatasync, SYS_ftruncate,
                        SYS_fallocate};

// A file system's calls: the 9p server's operations under its share, a migration's RAM files.
const long kFileSystem[] = {
    SYS_open,      SYS_openat,     SYS_stat,       SYS_lstat,      SYS_statfs,     SYS_fstatfs,     SYS_getdents64,
    SYS_readlink,  SYS_readlinkat, SYS_mkdir,      SYS_mkdirat,    SYS_mknod,      SYS_mknodat,     SYS_unlink,
    SYS_unlinkat,  SYS_rmdir,      SYS_rename,     SYS_renameat,   SYS_renameat2,  SYS_symlink,     SYS_symlinkat,
    SYS_link,      SYS_linkat,     SYS_chmod,      SYS_fchmod,     SYS_fchmodat,   SYS_chown,       SYS_fchown,
    SYS_lchown,    SYS_fchownat,   SYS_utimensat,  SYS_truncate,   SYS_access,     SYS_faccessat,   SYS_getxattr,
    SYS_lgetxattr, SYS_fgetxattr,  SYS_listxattr,  SYS_llistxattr, SYS_flistxattr, SYS_setxattr,    SYS_lsetxattr,
    SYS_fsetxattr, SYS_removexattr, SYS_lremovexattr, SYS_fremovexattr, SYS_flock, SYS_dup, SYS_getcwd,
#ifdef SYS_faccessat2
    SYS_faccessat2,
#endif
#ifdef SYS_fchmodat2
    SYS_fchmodat2,
#endif
#ifdef SYS_openat2
    SYS_openat2,
#endif
};

// A migration's RAM: a new RAM file (memfd or tmpfs), its mapping.
const long kRamFiles[] = {SYS_memfd_create};

// getaddrinfo for a tcp: migration's host: /etc/hosts and NSS modules (files, mappings), DNS over
// UDP, netlink for sorting the addresses (the socket calls are on kSockets).
const long kNameResolution[] = {SYS_sendmmsg, SYS_recvmmsg, SYS_uname, SYS_getuid, SYS_geteuid};

#if defined(STENCIL_SANITIZED)
// Test builds only: the sanitizers' runtime probes whether memory is readable by writing it to a
// pipe (sanitizer_common's IsAccessibleMemoryRange), on any thread, e.g. when one ends.
const long kSanitizerRuntime[] = {SYS_pipe, SYS_pipe2, SYS_sched_getparam, SYS_getrlimit, SYS_prlimit64};
#endif

// The KVM requests the VMM makes (system, VM and vCPU ioctls), the only ioctls any VMM thread may
// make: no terminal (TIOCSTI), network, file system or block device requests.
const uint32_t kKvmRequests[] = {
    KVM_GET_API_VERSION, KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE, KVM_GET_SUPPORTED_CPUID,
    KVM_GET_MSR_INDEX_LIST, KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR,
    KVM_CREATE_IRQCHIP, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_CREATE_PIT2, KVM_GET_PIT2, KVM_SET_PIT2, KVM_IRQFD,
    KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_GET_DIRTY_LOG, KVM_GET_STATS_FD, KVM_RUN, KVM_NMI, KVM_TRANSLATE,
    KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_SET_FPU, KVM_GET_MSRS, KVM_SET_MSRS,
    KVM_GET_CPUID2, KVM_SET_CPUID2, KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS,
    KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, KVM_GET_XSAVE, KVM_SET_XSAVE,
    KVM_GET_XCRS, KVM_SET_XCRS, KVM_GET_TSC_KHZ, KVM_SET_TSC_KHZ, KVM_KVMCLOCK_CTRL,
#if defined(STENCIL_SANITIZED)
    TCGETS,  // test builds: a sanitizer report asks whether stderr is a terminal (for colours)
#endif
};

template <size_t N>
void Add(std::vector<long>& out, const long (&list)[N]) {
  out.insert(out.end(), list, list + N);
}

constexpr uint32_t kArgOffset[] = {offsetof(seccomp_data, args[0]), offsetof(seccomp_data, args[1]),
                                   offsetof(seccomp_data, args[2]), offsetof(seccomp_data, args[3])};

// One rule's check, ending in its own returns: load the argument's low word (x86-64 is little
// endian), then allow only what the rule lets through.
std::vector<sock_filter> RuleBlock(const seccomp::ArgumentRule& rule) {
  std::vector<sock_filter> b;
  b.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArgOffset[rule.arg]));
  if (!rule.one_of.empty()) {
    size_t n = rule.one_of.size();
    for (size_t j = 0; j < n; j++)  // to the ALLOW after the TRAP
      b.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, rule.one_of[j], static_cast<uint8_t>(n - j), 0));
  } else {
    b.push_back(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, rule.forbidden_bits, 0, 1));
  }
  b.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP));
  b.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  return b;
}

// A classic BPF program: x86-64 only (another ABI's numbers mean other calls), then each allowed
// number jumps (BPF_JA: any distance) to ALLOW or to its argument rule's block; anything else
// traps (SIGSYS, reported below).
std::vector<sock_filter> BuildProgram(const std::vector<long>& allowed, const std::vector<seccomp::ArgumentRule>& rules) {
  std::vector<sock_filter> p;
  p.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  p.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0));
  p.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  p.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
  size_t allow_at = p.size() + 2 * allowed.size() + 1;  // after the dispatch and the trap
  std::vector<std::vector<sock_filter>> blocks;
  std::vector<std::pair<long, size_t>> block_at;
  size_t next = allow_at + 1;
  for (const auto& rule : rules) {
    blocks.push_back(RuleBlock(rule));
    block_at.emplace_back(rule.nr, next);
    next += blocks.back().size();
  }
  // The x32 ABI reaches the same calls with bit 30 set: not on our lists, so trapped.
  for (long nr : allowed) {
    size_t target = allow_at;
    for (const auto& [rule_nr, at] : block_at)
      if (rule_nr == nr) target = at;
    p.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1));
    p.push_back(BPF_STMT(BPF_JMP | BPF_JA, static_cast<uint32_t>(target - (p.size() + 1))));
  }
  p.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP));
  p.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  for (const auto& b : blocks) p.insert(p.end(), b.begin(), b.end());
  return p;
}

// Async-signal-safe: the report is assembled by hand and written with one write(2).
void AppendText(char* buf, size_t cap, size_t* len, const char* s) {
  while (*s && *len + 1 < cap) buf[(*len)++] = *s++;
}

void AppendNumber(char* buf, size_t cap, size_t* len, long v) {
  char digits[24];
  int n = 0;
  unsigned long u = v < 0 ? 0UL - static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
  do digits[n++] = static_cast<char>('0' + u % 10); while ((u /= 10) && n < 23);
  if (v < 0) digits[n++] = '-';
  while (n && *len + 1 < cap) buf[(*len)++] = digits[--n];
}

void OnForbiddenSyscall(int, siginfo_t* info, void*) {
  char msg[256];
  size_t len = 0;
  AppendText(msg, sizeof msg, &len, "stencil-vmm: seccomp: a ");
  AppendText(msg, sizeof msg, &len, t_role ? t_role : "VMM");
  AppendText(msg, sizeof msg, &len, " thread made system call ");
  AppendNumber(msg, sizeof msg, &len, info->si_syscall);
  AppendText(msg, sizeof msg, &len, ", which its allow-list forbids (vmm-native/src/host/seccomp.cc): ending the process\n");
  [[maybe_unused]] ssize_t n = write(STDERR_FILENO, msg, len);
  _exit(kForbiddenSyscallExit);
}

thread_local bool t_confined = false;

}  // namespace

std::vector<long> AllowedSyscalls(ThreadRole role) {
  std::vector<long> out;
  Add(out, kBase);
#if defined(STENCIL_SANITIZED)
  Add(out, kSanitizerRuntime);
#endif
  switch (role) {
    case ThreadRole::kVcpu:
      Add(out, kKvm), Add(out, kEventLoop), Add(out, kSockets), Add(out, kSocketFile);
      break;
    case ThreadRole::kDevice:
      Add(out, kKvm), Add(out, kEventLoop), Add(out, kSockets);
      break;
    case ThreadRole::kBlockIo:
      Add(out, kKvm), Add(out, kFileIo);
      break;
    case ThreadRole::kFileShare:
      Add(out, kKvm), Add(out, kFileIo), Add(out, kFileSystem);
      break;
    case ThreadRole::kMigration:
      Add(out, kKvm), Add(out, kEventLoop), Add(out, kSockets), Add(out, kFileIo), Add(out, kFileSystem), Add(out, kRamFiles),
          Add(out, kNameResolution);
      break;
    case ThreadRole::kThrottle:
      break;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<ArgumentRule> ArgumentRules(ThreadRole role) {
  std::vector<ArgumentRule> rules;
  std::vector<long> allowed = AllowedSyscalls(role);
  auto allows = [&](long nr) { return std::find(allowed.begin(), allowed.end(), nr) != allowed.end(); };
  if (allows(SYS_ioctl)) rules.push_back({SYS_ioctl, 1, {std::begin(kKvmRequests), std::end(kKvmRequests)}});
  if (allows(SYS_socket)) {
    // vsock's host side is Unix sockets; a tcp: migration adds IP, and getaddrinfo's netlink query.
    std::vector<uint32_t> families{AF_UNIX};
    if (role == ThreadRole::kMigration) families.insert(families.end(), {AF_INET, AF_INET6, AF_NETLINK});
    rules.push_back({SYS_socket, 0, families});
  }
  // No new code: only a migration thread may map it, for the NSS modules getaddrinfo may load.
  if (role != ThreadRole::kMigration) {
    rules.push_back({SYS_mmap, 2, {}, PROT_EXEC});
    rules.push_back({SYS_mprotect, 2, {}, PROT_EXEC});
  }
  return rules;
}

uint64_t KeptCapabilities(ThreadRole role) {
  auto bit = [](int cap) { return uint64_t{1} << cap; };
  switch (role) {
    case ThreadRole::kFileShare:
      // The 9p server acts for the guest's root on files of any owner in the share: it makes them
      // and hands them over (chown), reads, writes and stamps others' files, keeps set-gid bits,
      // makes device nodes.
      return bit(CAP_CHOWN) | bit(CAP_DAC_OVERRIDE) | bit(CAP_DAC_READ_SEARCH) | bit(CAP_FOWNER) | bit(CAP_FSETID) |
             bit(CAP_MKNOD);
    case ThreadRole::kMigration:
      // An arriving VM's RAM file and a template's, wherever the admin keeps them.
      return bit(CAP_DAC_OVERRIDE) | bit(CAP_DAC_READ_SEARCH) | bit(CAP_FOWNER);
    default:
      return 0;  // KVM, eventfds, sockets and files the VMM already holds need none
  }
}

namespace {

// Capabilities are per thread: this one keeps only `keep` (and only those it had).
std::string DropCapabilities(uint64_t keep) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) return WithErrno("capget");
  for (int i = 0; i < 2; i++) {
    uint32_t k = static_cast<uint32_t>(keep >> (32 * i));
    data[i].permitted &= k;
    data[i].effective &= k;
    data[i].inheritable = 0;
  }
  if (syscall(SYS_capset, &header, data) != 0) return WithErrno("capset");
  return "";
}

}  // namespace

std::string ConfineCurrentThread(ThreadRole role) {
  std::vector<sock_filter> program = BuildProgram(AllowedSyscalls(role), ArgumentRules(role));
  if (program.size() > BPF_MAXINSNS) return "the allow-list is too long for one BPF program";
  sock_fprog prog{static_cast<unsigned short>(program.size()), program.data()};
  t_role = ThreadRoleName(role);
  if (std::string error = DropCapabilities(KeptCapabilities(role)); !error.empty()) return error;
  // Per thread (no TSYNC): only this thread, and threads it starts, are filtered.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return WithErrno("prctl(PR_SET_NO_NEW_PRIVS)");
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) return WithErrno("seccomp(SECCOMP_SET_MODE_FILTER)");
  t_confined = true;
  return "";
}

bool CurrentThreadConfined() { return t_confined; }

bool Enabled() { return g_enabled.load(); }

void Enable() {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (g_enabled.load()) return;
  if (t_confined) throw VmmError(ErrorCode::kState, "seccomp filters must be enabled from a thread that is not confined");
  struct sigaction sa{};
  sa.sa_sigaction = OnForbiddenSyscall;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO;
  if (sigaction(SIGSYS, &sa, nullptr) != 0) throw VmmError(ErrorCode::kState, WithErrno("sigaction(SIGSYS)"));
  // A probe thread confines itself as a vCPU would: a kernel without seccomp filters says so here,
  // not in a vCPU thread.
  std::string error;
  std::thread probe([&] { error = ConfineCurrentThread(ThreadRole::kVcpu); });
  probe.join();
  if (!error.empty())
    throw VmmError(ErrorCode::kState, "this kernel does not install seccomp filters (" + error +
                                          "); turn them off with [hypervisor] seccomp = false");
  StartThreadLauncher();
  g_enabled = true;
}

}  // namespace seccomp
}  // namespace stencil
