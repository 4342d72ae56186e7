#define _GNU_SOURCE
#include "spare.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon_spawn.h"

// The first string of a handoff (shim/src/shim/spare.ts checks it): a spare of another format
// refuses the pod, and `start` spawns a daemon instead.
#define HANDOFF_MAGIC "stencil-handoff-1"
// A waiting spare acknowledges at once; this covers one starved by load.
#define ACK_TIMEOUT_MS 5000
// How long a start waits for a spare still loading (Node's start and the shim's modules: ~0.15 s
// on metal, seconds under emulation) before it spawns a daemon itself.
#define SPARE_WAIT_MS 30000

extern char **environ;

struct buffer {
  char *data;
  size_t len, cap;
};

static bool append(struct buffer *b, const char *s, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) return false;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  return true;
}

static bool append_string(struct buffer *b, const char *s) { return append(b, s, strlen(s) + 1); }

// u32 length | magic, working directory, number of flags, the flags, the environment.
static bool handoff_message(struct buffer *b, const char *const *args) {
  char cwd[PATH_MAX], count[24];
  if (!getcwd(cwd, sizeof cwd)) return false;
  size_t n = 0;
  while (args[n]) n++;
  snprintf(count, sizeof count, "%zu", n);
  bool ok = append(b, "\0\0\0\0", 4) && append_string(b, HANDOFF_MAGIC) && append_string(b, cwd) && append_string(b, count);
  for (size_t i = 0; ok && i < n; i++) ok = append_string(b, args[i]);
  for (char **e = environ; ok && *e; e++) ok = append_string(b, *e);
  if (!ok || b->len - 4 > UINT32_MAX) return false;
  uint32_t body = (uint32_t)(b->len - 4);
  for (int i = 0; i < 4; i++) b->data[i] = (char)(body >> (8 * i));
  return true;
}

static bool send_all(int conn, const struct buffer *b, const int *fds, size_t nfds) {
  size_t sent = 0;
  while (sent < b->len) {
    struct iovec iov = {.iov_base = b->data + sent, .iov_len = b->len - sent};
    union {
      char buf[CMSG_SPACE(sizeof(int) * 4)];
      struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (sent == 0) {  // the descriptors travel with the first bytes
      msg.msg_control = control.buf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(conn, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += (size_t)n;
  }
  return true;
}

static bool acknowledged(int conn) {
  struct pollfd p = {.fd = conn, .events = POLLIN};
  int r;
  do r = poll(&p, 1, ACK_TIMEOUT_MS);
  while (r < 0 && errno == EINTR);
  char ack = 0;
  return r == 1 && read(conn, &ack, 1) == 1 && ack == 'k';
}

int connect_unix(const char *sock) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof sa.sun_path) return -1;
  strcpy(sa.sun_path, sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct timeval timeout = {.tv_sec = 2};  // a full backlog makes connect wait
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// The pid a spare's lock file names (ensure_spare writes it), or 0.
static pid_t spare_pid(int lock) {
  char buf[24] = {0};
  ssize_t n = pread(lock, buf, sizeof buf - 1, 0);
  long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
  return pid > 0 ? (pid_t)pid : 0;
}

// Every thread of `pid` back to priority 0 (a spare loads at 19, behind the pods that run).
static void raise_priority(pid_t pid) {
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
  DIR *tasks = opendir(dir);
  if (!tasks) return;
  for (struct dirent *t; (t = readdir(tasks));)
    if (t->d_name[0] != '.') setpriority(PRIO_PROCESS, (id_t)atoi(t->d_name), 0);
  closedir(tasks);
}

// A connection to the spare: at once when one waits; when one is still loading (its lock is held)
// and no other start waits for it, once it listens, raised to priority 0 meanwhile (it started
// before this pod: it is ahead of a daemon spawned now). -1 when there is none, another start
// claimed it, it dies, or it does not listen within SPARE_WAIT_MS.
static int connect_when_ready(const struct spare_paths *p) {
  int conn = connect_unix(p->sock);
  if (conn >= 0) return conn;
  int lock = open(p->lock, O_RDONLY | O_CLOEXEC);
  if (lock < 0) return -1;
  bool loading = flock(lock, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  // One start waits for a loading spare; the others of a burst spawn their daemons at once.
  char claim_path[PATH_MAX + 8];
  snprintf(claim_path, sizeof claim_path, "%.*s.claim", (int)(strlen(p->lock) - strlen(".lock")), p->lock);
  int claim = loading ? open(claim_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
  if (claim >= 0 && flock(claim, LOCK_EX | LOCK_NB) == 0) {
    pid_t pid = spare_pid(lock);
    if (pid > 0) raise_priority(pid);
    for (int waited = 0; waited < SPARE_WAIT_MS && conn < 0; waited += 20) {
      nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
      conn = connect_unix(p->sock);
      if (conn < 0 && flock(lock, LOCK_SH | LOCK_NB) == 0) break;  // it died
    }
  }
  if (claim >= 0) close(claim);
  close(lock);
  return conn;
}

char *handoff_to_spare(const struct spare_paths *p, const char *const *args, int listen_fd, const void *options, size_t options_len, int timeout_ms,
                       bool *taken, char **why) {
  *taken = false;
  *why = NULL;
  int conn = connect_when_ready(p);
  if (conn < 0) return NULL;
  int options_pipe[2] = {-1, -1}, report_pipe[2] = {-1, -1};
  // The daemon's stdout and stderr: the bundle's log FIFO, as a spawned daemon's (daemon_spawn.c).
  int log = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (log < 0) log = open("/dev/null", O_WRONLY | O_CLOEXEC);
  struct buffer message = {0};
  bool sent = false;
  pid_t pid = 0;
  if (log >= 0 && pipe2(options_pipe, O_CLOEXEC) == 0 && pipe2(report_pipe, O_CLOEXEC) == 0 && handoff_message(&message, args)) {
    int fds[] = {listen_fd, options_pipe[0], report_pipe[1], log};
    sent = send_all(conn, &message, fds, 4) && acknowledged(conn);
    struct ucred peer;
    socklen_t len = sizeof peer;
    if (sent && getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0) pid = peer.pid;
  }
  free(message.data);
  close(conn);
  if (log >= 0) close(log);
  if (options_pipe[0] >= 0) close(options_pipe[0]);
  if (report_pipe[1] >= 0) close(report_pipe[1]);
  if (!sent) {
    if (options_pipe[1] >= 0) close(options_pipe[1]);
    if (report_pipe[0] >= 0) close(report_pipe[0]);
    return NULL;
  }
  *taken = true;
  return await_daemon_report(pid, options_pipe[1], report_pipe[0], options, options_len, timeout_ms, why);
}

// Whether this process's root mount is shared ("shared:N" among its mountinfo optional fields),
// so that mounts made after a spare was spawned (a pod's network namespace, its volumes) reach the
// spare's mount namespace, a slave of this one. systemd makes / shared; without it, no spares.
static bool root_mount_shared(void) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) return false;
  char *line = NULL;
  size_t cap = 0;
  bool shared = false;
  while (getline(&line, &cap, f) > 0) {
    // ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER-OPTIONS
    char *save = NULL, *field = strtok_r(line, " ", &save);
    for (int i = 1; field && i < 5; i++) field = strtok_r(NULL, " ", &save);
    if (!field || strcmp(field, "/") != 0) continue;
    strtok_r(NULL, " ", &save);  // options
    shared = false;  // the last mount on / is the one in effect
    for (char *opt = strtok_r(NULL, " ", &save); opt && strcmp(opt, "-") != 0; opt = strtok_r(NULL, " ", &save))
      if (strncmp(opt, "shared:", 7) == 0) shared = true;
  }
  free(line);
  fclose(f);
  return shared;
}

void ensure_spare(const struct spare_paths *p, const char *file, char *const *argv) {
  if (!root_mount_shared()) return;
  if ((mkdir("/run/stencil", 0755) != 0 && errno != EEXIST) || (mkdir(SPARE_DIR, 0700) != 0 && errno != EEXIST)) return;
  int lock = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) return;
  if (flock(lock, LOCK_EX | LOCK_NB) != 0) {  // a spare is loading or waiting
    close(lock);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    if (setsid() < 0) _exit(127);
    // Nothing of `start`'s: containerd waits for its stdout and stderr to close.
    int null_in = open("/dev/null", O_RDONLY | O_CLOEXEC), null_out = open("/dev/null", O_WRONLY | O_CLOEXEC);
    int held = fcntl(lock, F_DUPFD_CLOEXEC, 10);
    if (null_in < 0 || null_out < 0 || held < 0) _exit(127);
    null_in = fcntl(null_in, F_DUPFD_CLOEXEC, 10);
    null_out = fcntl(null_out, F_DUPFD_CLOEXEC, 10);
    if (null_in < 0 || null_out < 0) _exit(127);
    place_fd(null_in, STDIN_FILENO, -1);
    place_fd(null_out, STDOUT_FILENO, -1);
    place_fd(null_out, STDERR_FILENO, -1);
    place_fd(held, SPARE_LOCK_FD, -1);
    confine_daemon(-1);
    tune_daemon_environment();
    // spare.ts raises every thread back to 0 when it takes a pod.
    setpriority(PRIO_PROCESS, 0, 19);
    execvp(file, argv);
    _exit(127);
  }
  if (pid > 0) {  // for a start that finds it still loading (connect_when_ready)
    char text[24];
    int n = snprintf(text, sizeof text, "%d\n", (int)pid);
    if (ftruncate(lock, 0) != 0 || pwrite(lock, text, (size_t)n, 0) != n) {
      // a start that finds no pid waits without raising it
    }
  }
  close(lock);  // the spare holds it (a failed fork leaves none, and the next start tries again)
}
