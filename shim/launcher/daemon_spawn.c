// The pod's shim daemon runs as root, as containerd's shims do, but without the capabilities none
// of its work needs: they leave its bounding set (and the inheritable and ambient sets are
// cleared) before it is exec'ed, so the whole process (Node's own threads included, which the
// VMM's per-thread seccomp and capability drops do not cover) and everything it runs (iptables,
// nsenter, a daemon it migrates a pod to) can never hold them. Kept: SYS_ADMIN (mounts, network
// namespaces), NET_ADMIN/NET_RAW (tap, tc, iptables), the file capabilities the 9p server acts
// with for the guest's root (CHOWN, DAC_*, FOWNER, FSETID, MKNOD), KILL, SETUID/SETGID, SETPCAP
// (the VMM threads' own drops), SYS_PTRACE, SYS_NICE, SYS_RESOURCE, IPC_LOCK, NET_BIND_SERVICE.
//
// It also gets a mount namespace of its own (host mounts still propagate in): the container
// rootfs and share mounts it makes are invisible outside and vanish with it, even if it is killed.
#define _GNU_SOURCE
#include "daemon_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// linux/capability.h numbers of the capabilities the daemon gives up.
static const int DROPPED_CAPABILITIES[] = {
    9,   // LINUX_IMMUTABLE
    11,  // NET_BROADCAST
    15,  // IPC_OWNER
    16,  // SYS_MODULE
    17,  // SYS_RAWIO
    18,  // SYS_CHROOT
    20,  // SYS_PACCT
    22,  // SYS_BOOT
    25,  // SYS_TIME
    26,  // SYS_TTY_CONFIG
    28,  // LEASE
    29,  // AUDIT_WRITE
    30,  // AUDIT_CONTROL
    31,  // SETFCAP
    32,  // MAC_OVERRIDE
    33,  // MAC_ADMIN
    34,  // SYSLOG
    35,  // WAKE_ALARM
    36,  // BLOCK_SUSPEND
    37,  // AUDIT_READ
    38,  // PERFMON
    39,  // BPF
    40,  // CHECKPOINT_RESTORE
};

// In the child, between fork and exec: tells the parent what failed and exits.
static void child_fail(int report_fd, const char *what) {
  char line[512];
  int n = snprintf(line, sizeof line, "error cannot start the shim daemon: %s: %s\n", what, strerror(errno));
  if (n > 0 && report_fd >= 0) (void)!write(report_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
  _exit(127);
}

static int last_capability(void) {
  int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
  char buf[16] = {0};
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0) close(fd);
  return n > 0 ? atoi(buf) : 37;  // Linux 5.4's: the oldest kernel assumed
}

static void drop_capabilities(int report_fd) {
  int last = last_capability();
  for (size_t i = 0; i < sizeof DROPPED_CAPABILITIES / sizeof *DROPPED_CAPABILITIES; i++) {
    if (DROPPED_CAPABILITIES[i] <= last && prctl(PR_CAPBSET_DROP, DROPPED_CAPABILITIES[i], 0, 0, 0) != 0) child_fail(report_fd, "dropping a capability from the bounding set");
  }
  struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &header, data) != 0) child_fail(report_fd, "capget");
  data[0].inheritable = data[1].inheritable = 0;
  if (syscall(SYS_capset, &header, data) != 0) child_fail(report_fd, "clearing the inheritable capabilities");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) child_fail(report_fd, "clearing the ambient capabilities");
}

// Puts `fd` at `target` for the exec (without close-on-exec).
void place_fd(int fd, int target, int report_fd) {
  if (fd == target) {
    if (fcntl(fd, F_SETFD, 0) != 0) child_fail(report_fd, "keeping a descriptor");
  } else if (dup2(fd, target) < 0) {
    child_fail(report_fd, "placing a descriptor");
  }
}

static void run_child(const struct daemon_spawn *d, int options_fd, int report_fd) {
  if (setsid() < 0) child_fail(report_fd, "setsid");
  // Out of the way of the numbers the daemon gets (all close-on-exec), then into place.
  int socket = fcntl(d->listen_fd, F_DUPFD_CLOEXEC, 10);
  int options = fcntl(options_fd, F_DUPFD_CLOEXEC, 10);
  int report = fcntl(report_fd, F_DUPFD_CLOEXEC, 10);
  if (socket < 0 || options < 0 || report < 0) child_fail(report_fd, "duplicating descriptors");
  // stdout and stderr: the bundle's `log` FIFO (containerd holds it open, so this never blocks);
  // containerd waits for `start`'s own stdout and stderr to close, so the daemon must not keep them.
  int log = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (log < 0) log = open("/dev/null", O_WRONLY | O_CLOEXEC);
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log < 0 || null < 0) child_fail(report, "opening the daemon's stdio");
  log = fcntl(log, F_DUPFD_CLOEXEC, 10);
  null = fcntl(null, F_DUPFD_CLOEXEC, 10);
  if (log < 0 || null < 0) child_fail(report, "duplicating descriptors");
  place_fd(null, STDIN_FILENO, report);
  place_fd(log, STDOUT_FILENO, report);
  place_fd(log, STDERR_FILENO, report);
  place_fd(socket, DAEMON_SOCKET_FD, report);
  place_fd(options, DAEMON_OPTIONS_FD, report);
  place_fd(report, DAEMON_REPORT_FD, report);
  confine_daemon(DAEMON_REPORT_FD);
  tune_daemon_environment();
  execvp(d->file, d->argv);
  child_fail(DAEMON_REPORT_FD, "cannot run node");
}

// glibc gives each thread that allocates (vCPUs, device threads, Node's and libuv's workers) an
// arena of its own and keeps what is freed in it: with one arena a pod's daemon held 16 instead
// of 19.8 MiB of anonymous memory besides guest RAM (emulated host, 4 pods, medians). Threads
// still allocate small blocks from their own tcache without taking the arena's lock.
void tune_daemon_environment(void) { setenv("MALLOC_ARENA_MAX", "1", 0); }

void confine_daemon(int report_fd) {
  if (unshare(CLONE_NEWNS) != 0) child_fail(report_fd, "a mount namespace of its own (unshare)");
  if (mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) child_fail(report_fd, "making its mounts slaves of the host's");
  drop_capabilities(report_fd);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

// The report line, NULL at EOF or when the time is up (*timed_out).
static char *read_report(int fd, int timeout_ms, bool *timed_out) {
  char buf[4096];
  size_t used = 0;
  long long deadline = now_ms() + timeout_ms;
  *timed_out = false;
  while (used < sizeof buf - 1) {
    long long left = deadline - now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = left > 0 ? poll(&p, 1, (int)left) : 0;
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      *timed_out = true;
      return NULL;
    }
    ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += (size_t)n;
    if (memchr(buf, '\n', used)) break;
  }
  if (used == 0) return NULL;
  buf[used] = '\0';
  char *nl = strchr(buf, '\n');
  if (nl) *nl = '\0';
  return strdup(buf);
}

char *spawn_daemon(const struct daemon_spawn *d, int timeout_ms, char **why) {
  int options[2], report[2];
  *why = NULL;
  if (pipe2(options, O_CLOEXEC) != 0) {
    *why = strdup("cannot make a pipe for the daemon's runtime options");
    return NULL;
  }
  if (pipe2(report, O_CLOEXEC) != 0) {
    close(options[0]);
    close(options[1]);
    *why = strdup("cannot make a pipe for the daemon's report");
    return NULL;
  }
  pid_t pid = fork();
  if (pid == 0) run_child(d, options[0], report[1]);
  close(options[0]);
  close(report[1]);
  if (pid < 0) {
    close(options[1]);
    close(report[0]);
    *why = strdup("cannot fork the shim daemon");
    return NULL;
  }
  return await_daemon_report(pid, options[1], report[0], d->options, d->options_len, timeout_ms, why);
}

char *await_daemon_report(pid_t pid, int options_fd, int report_fd, const void *options, size_t options_len, int timeout_ms, char **why) {
  *why = NULL;
  // The daemon reads its options first thing; one that died before gives EPIPE (SIGPIPE ignored).
  signal(SIGPIPE, SIG_IGN);
  const char *p = options;
  for (size_t left = options_len; left > 0;) {
    ssize_t n = write(options_fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    p += n;
    left -= (size_t)n;
  }
  close(options_fd);
  bool timed_out = false;
  char *line = read_report(report_fd, timeout_ms, &timed_out);
  close(report_fd);
  if (line) return line;
  if (timed_out) {
    if (pid > 0) kill(pid, SIGKILL);
    if (asprintf(why, "the shim daemon (pid %d) did not report ready within %d s; killed it", (int)pid, timeout_ms / 1000) < 0) *why = NULL;
  } else if (asprintf(why, "the shim daemon (pid %d) exited before it was ready (its log is containerd's)", (int)pid) < 0) {
    *why = NULL;
  }
  waitpid(pid, NULL, WNOHANG);
  return NULL;
}
