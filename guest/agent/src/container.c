// Containers and processes: the RPC handlers, crun invocations, reaping, stdio relays and stats.
//
// Every process the agent cares about ends up as its child: crun is spawned by the agent, and
// the container processes crun leaves behind are re-parented to the agent (a child subreaper)
// when crun exits. So the agent's own waitpid(-1) loop sees every exit, a pid cannot be reused
// before the agent has reaped it (kill(2) on a known, unreaped pid is race-free), and an exit
// that arrives before the agent learned the pid (crun's pid file) is parked in `unclaimed`.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

struct waiter {
  uint64_t conn_id, req_id;
  struct waiter *next;
};

struct container;

struct process {
  struct container *c;
  char *exec_id;  // "" = init
  pid_t pid;      // 0 until crun reported it
  bool exited;
  uint32_t status;
  int64_t exited_at_ns;
  bool oom;
  bool terminal;
  int pty;  // pty master (resize, ^D); -1 without a terminal
  struct stream streams[3];
  struct waiter *waiters;
  struct process *next;
};

enum cstate { C_CREATING, C_CREATED, C_RUNNING, C_PAUSED, C_STOPPED };
static const char *const state_names[] = {"creating", "created", "running", "paused", "stopped"};

struct queued {
  struct request req;
  uint64_t conn_id;
  struct queued *next;
};

struct container {
  char *id;
  char *dir;     // STATE_DIR/containers/ID: the bundle (config.json) and pid files
  char *cgroup;  // absolute cgroup directory, "" if unknown
  int state;
  struct process *procs;  // init first
  // crun operations on one container run one at a time; later calls wait in `queue`.
  bool busy;
  struct queued *queue;
  bool deleting;
  uint64_t delete_conn, delete_req;
  struct container *next;
};

// A running crun invocation; its exit completes the request.
struct op {
  pid_t pid;
  int method;
  uint64_t conn_id, req_id;
  struct container *c;
  struct process *p;  // create / exec
  char *log_path;
  char *pid_file;
  int console_fd;  // listening console socket for a terminal, -1
  char *console_path;
  struct op *next;
};

static struct container *containers;
static struct op *ops;
static bool no_pivot;  // see root_is_initramfs
static unsigned long long serial;

#define MAX_UNCLAIMED 128
static struct {
  pid_t pid;
  int status;
  int64_t at_ns;
} unclaimed[MAX_UNCLAIMED];
static size_t n_unclaimed;

static void container_drain(struct container *c);
static void run_call(struct container *c, uint64_t conn_id, struct request *req);
static void on_stream_event(struct handler *h, uint32_t events);

// ---------------------------------------------------------------------------------------------
// helpers

static bool valid_id(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (i > 0 && (ch == '_' || ch == '.' || ch == '-'));
    if (!ok) return false;
  }
  return true;
}

static void respond(uint64_t conn_id, uint64_t req_id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void respond(uint64_t conn_id, uint64_t req_id, int code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  send_response(conn_id, req_id, code, msg, 0, NULL);
}

static void respond_ok(uint64_t conn_id, uint64_t req_id) { send_response(conn_id, req_id, E_OK, NULL, 0, NULL); }

static void respond_pid(uint64_t conn_id, uint64_t req_id, int field, pid_t pid) {
  buf_t b = {0};
  encode_pid(&b, (uint32_t)pid);
  send_response(conn_id, req_id, E_OK, NULL, field, &b);
  buf_free(&b);
}

static int write_file(const char *path, const void *data, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  const uint8_t *p = data;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return close(fd);
}

// Reads up to cap-1 bytes of a (small) file into buf, NUL-terminated; -1 if it cannot be read.
static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t len = 0;
  while (len + 1 < cap) {
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = 0;
  return (ssize_t)len;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
  return s;
}

static uint32_t exit_status_of(int st) {
  if (WIFEXITED(st)) return (uint32_t)WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128u + (uint32_t)WTERMSIG(st);
  return 255;
}

static struct container *find_container(const char *id) {
  for (struct container *c = containers; c; c = c->next)
    if (!strcmp(c->id, id)) return c;
  return NULL;
}

static struct process *find_process(struct container *c, const char *exec_id) {
  for (struct process *p = c->procs; p; p = p->next)
    if (!strcmp(p->exec_id, exec_id)) return p;
  return NULL;
}

static const char *proc_label(const struct process *p) { return p->exec_id[0] ? p->exec_id : "init"; }

// ---------------------------------------------------------------------------------------------
// stdio streams

static void stream_close_fd(struct stream *s) {
  watch(&s->h, 0);
  if (s->h.fd >= 0) close(s->h.fd);
  s->h.fd = -1;
}

void stream_update(struct stream *s) {
  if (!s || s->h.dead) return;
  uint32_t want = 0;
  if (s->h.fd >= 0) {
    if (s->kind == S_STDIN) {
      if (buf_pending(&s->pending)) want = EPOLLOUT;
    } else if (s->conn && !s->conn->dead && buf_pending(&s->conn->wbuf) < OUTPUT_HIGH_WATER) {
      want = EPOLLIN;
    }
  }
  watch(&s->h, want);
}

// Cuts the link between a stream and its connection (both stay alive).
static struct conn *unlink_conn(struct stream *s) {
  struct conn *c = s->conn;
  if (c) {
    c->stream = NULL;
    s->conn = NULL;
  }
  return c;
}

static void output_eof(struct stream *s) {
  stream_close_fd(s);
  s->finished = true;
  struct conn *c = unlink_conn(s);
  if (c) {
    frame_put(&c->wbuf, FK_EOF, NULL, 0);
    conn_flush(c);
  }
}

static void output_readable(struct stream *s) {
  static uint8_t chunk[64 << 10];
  for (int round = 0; round < 4 && s->h.fd >= 0 && s->conn && !s->conn->dead; round++) {
    if (buf_pending(&s->conn->wbuf) >= OUTPUT_HIGH_WATER) break;
    ssize_t n = read(s->h.fd, chunk, sizeof chunk);
    if (n > 0) {
      frame_put(&s->conn->wbuf, FK_DATA, chunk, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    // 0: every writer closed the pipe. EIO: the pty's slave side is closed for good.
    if (n < 0 && !(s->pty && errno == EIO))
      log_msg(LOG_INFO, "read of %s output: %s", proc_label(s->proc), strerror(errno));
    output_eof(s);
    return;
  }
  if (s->conn) conn_flush(s->conn);  // also re-evaluates what the stream waits for
  else stream_update(s);
}

static void input_close(struct stream *s) {
  stream_close_fd(s);
  s->finished = true;
  buf_free(&s->pending);
}

// Writes pending stdin bytes into the pipe; closes it after an EOF once everything is in.
static void input_flush(struct stream *s) {
  while (s->h.fd >= 0 && buf_pending(&s->pending)) {
    ssize_t n = write(s->h.fd, buf_head(&s->pending), buf_pending(&s->pending));
    if (n > 0) {
      buf_consume(&s->pending, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    // EPIPE: the process closed its stdin (or exited); what it did not read is dropped.
    log_msg(LOG_DEBUG, "stdin of %s: %s; dropping further input", proc_label(s->proc), strerror(errno));
    input_close(s);
    break;
  }
  if (s->h.fd >= 0 && !buf_pending(&s->pending) && s->pending_eof) input_close(s);
  stream_update(s);
}

void stream_input(struct stream *s, int kind, const uint8_t *p, size_t n) {
  if (kind == FK_EOF) {
    unlink_conn(s);
    if (s->finished) return;
    if (s->pty) buf_append(&s->pending, "\x04", 1);  // the tty's EOF character
    s->pending_eof = true;
  } else {
    if (s->finished || s->pending_eof) return;  // stdin is closed: data is dropped
    buf_append(&s->pending, p, n);
  }
  input_flush(s);
}

static void on_stream_event(struct handler *h, uint32_t events) {
  struct stream *s = (struct stream *)h;
  if (s->kind == S_STDIN) {
    (void)events;
    input_flush(s);
    // Room in the pipe again: let the connection deliver its next frame.
    if (s->conn && !buf_pending(&s->pending)) {
      struct conn *c = s->conn;
      conn_process(c);
    }
  } else {
    output_readable(s);
  }
}

void stream_detach(struct stream *s) {
  struct conn *c = s->conn;
  if (!c) return;
  unlink_conn(s);
  if (s->kind == S_STDIN) {
    // A stdin connection that ends closes stdin (after what it delivered is written).
    stream_input(s, FK_EOF, NULL, 0);
  } else {
    // Unsent output stays in the pipe for the next attach.
    stream_update(s);
  }
}

int stream_attach(struct conn *conn, const struct hello *h, char **msg) {
  static const char *const names[] = {"stdin", "stdout", "stderr"};
  struct container *c = find_container(h->container_id);
  if (!c) {
    *msg = xasprintf("container \"%s\" not found", h->container_id);
    return E_NOT_FOUND;
  }
  struct process *p = find_process(c, h->exec_id);
  if (!p) {
    *msg = xasprintf("process \"%s\" not found in container \"%s\"", h->exec_id, h->container_id);
    return E_NOT_FOUND;
  }
  int kind = h->role - ROLE_STDIN;
  struct stream *s = &p->streams[kind];
  if (!s->present) {
    *msg = xasprintf("process %s of container \"%s\" has no %s", proc_label(p), c->id, names[kind]);
    return E_FAILED_PRECONDITION;
  }
  if (s->finished || s->pending_eof) {
    *msg = xasprintf("%s of process %s of container \"%s\" is already closed", names[kind], proc_label(p), c->id);
    return E_FAILED_PRECONDITION;
  }
  if (s->conn) {
    *msg = xasprintf("%s of process %s of container \"%s\" is already attached", names[kind], proc_label(p), c->id);
    return E_ALREADY_EXISTS;
  }
  s->conn = conn;
  conn->stream = s;
  return E_OK;
}

// ---------------------------------------------------------------------------------------------
// processes and containers: life cycle

static struct process *process_new(struct container *c, const char *exec_id, const struct stdio_mode *m) {
  struct process *p = xcalloc(1, sizeof *p);
  p->c = c;
  p->exec_id = xstrdup(exec_id);
  p->terminal = m->terminal;
  p->pty = -1;
  for (int k = 0; k < 3; k++) {
    struct stream *s = &p->streams[k];
    s->h.fn = on_stream_event;
    s->h.fd = -1;
    s->proc = p;
    s->kind = k;
    s->pty = m->terminal;
  }
  p->streams[S_STDIN].present = m->in;
  // With a terminal the pty's output is always relayed: nobody else would drain it.
  p->streams[S_STDOUT].present = m->terminal || m->out;
  p->streams[S_STDERR].present = !m->terminal && m->err;
  // Append: init stays first.
  struct process **pp = &c->procs;
  while (*pp) pp = &(*pp)->next;
  *pp = p;
  return p;
}

// The process is being forgotten and its writers are dead (reaped): move what is left in the
// pipe (bounded by its capacity) to the attached connection and end the stream properly.
static void drain_output(struct stream *s) {
  static uint8_t chunk[64 << 10];
  for (;;) {
    ssize_t n = read(s->h.fd, chunk, sizeof chunk);
    if (n > 0) {
      frame_put(&s->conn->wbuf, FK_DATA, chunk, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // a writer lives on: no EOF
    break;
  }
  output_eof(s);
}

static void answer_waiters(struct process *p, int code, const char *message) {
  while (p->waiters) {
    struct waiter *w = p->waiters;
    p->waiters = w->next;
    if (code == E_OK) {
      buf_t b = {0};
      struct wait_result r = {p->status, p->exited_at_ns, p->oom};
      encode_wait(&b, &r);
      send_response(w->conn_id, w->req_id, E_OK, NULL, M_WAIT, &b);
      buf_free(&b);
    } else {
      send_response(w->conn_id, w->req_id, code, message, 0, NULL);
    }
    free(w);
  }
}

static void process_free(void *ptr) {
  struct process *p = ptr;
  for (int k = 0; k < 3; k++) buf_free(&p->streams[k].pending);
  free(p->exec_id);
  free(p);
}

// Unlinks a process, closes its stdio and connections, and frees it after this event batch.
static void process_remove(struct process *p, const char *why) {
  struct container *c = p->c;
  for (struct process **pp = &c->procs; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  }
  answer_waiters(p, E_NOT_FOUND, why);
  for (int k = 0; k < 3; k++) {
    struct stream *s = &p->streams[k];
    if (k != S_STDIN && s->conn && s->h.fd >= 0) drain_output(s);
    s->h.dead = true;
    stream_close_fd(s);
    struct conn *conn = unlink_conn(s);
    if (conn) conn_close(conn);  // cut short: the host sees no EOF frame
  }
  if (p->pty >= 0) close(p->pty);
  p->pty = -1;
  defer_free(process_free, p);
}

static void remove_dir_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *path = xasprintf("%s/%s", dir, e->d_name);
    unlink(path);
    free(path);
  }
  closedir(d);
  rmdir(dir);
}

static void container_free(void *ptr) {
  struct container *c = ptr;
  free(c->id);
  free(c->dir);
  free(c->cgroup);
  free(c);
}

// Forgets a container: its processes, stdio, queued calls (answered NOT_FOUND) and files.
static void container_remove(struct container *c, const char *why) {
  for (struct container **pp = &containers; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  while (c->procs) process_remove(c->procs, why);
  while (c->queue) {
    struct queued *q = c->queue;
    c->queue = q->next;
    respond(q->conn_id, q->req.id, E_NOT_FOUND, "container \"%s\" not found (%s)", c->id, why);
    request_free(&q->req);
    free(q);
  }
  remove_dir_files(c->dir);
  defer_free(container_free, c);
}

static bool oom_killed(const struct container *c) {
  if (!c->cgroup[0]) return false;
  char path[600], text[1024];
  snprintf(path, sizeof path, "%s/memory.events", c->cgroup);
  if (read_small(path, text, sizeof text) < 0) return false;
  char *at = strstr(text, "oom_kill ");
  return at && strtoull(at + 9, NULL, 10) > 0;
}

static void maybe_finish_delete(struct container *c) {
  if (!c->deleting) return;
  for (struct process *p = c->procs; p; p = p->next)
    if (p->pid && !p->exited) return;
  uint64_t conn = c->delete_conn, req = c->delete_req;
  log_msg(LOG_INFO, "container %s deleted", c->id);
  container_remove(c, "the container was deleted");
  respond_ok(conn, req);
}

static void process_exited(struct process *p, int st, int64_t at_ns) {
  p->exited = true;
  p->status = exit_status_of(st);
  p->exited_at_ns = at_ns;
  p->oom = oom_killed(p->c);
  log_msg(LOG_DEBUG, "container %s process %s (pid %d) exited with status %u", p->c->id, proc_label(p), p->pid,
          p->status);
  if (!p->exec_id[0]) p->c->state = C_STOPPED;
  answer_waiters(p, E_OK, NULL);
  maybe_finish_delete(p->c);
}

// Records a pid learned from crun; if it already exited (and was reaped), handles that now.
static void process_started(struct process *p, pid_t pid) {
  p->pid = pid;
  for (size_t i = 0; i < n_unclaimed; i++) {
    if (unclaimed[i].pid == pid) {
      int st = unclaimed[i].status;
      int64_t at = unclaimed[i].at_ns;
      unclaimed[i] = unclaimed[--n_unclaimed];
      process_exited(p, st, at);
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// crun

static char **crun_argv(const char *log_path, const char *const *args) {
  size_t n = 0;
  while (args[n]) n++;
  char **argv = xcalloc(n + 10, sizeof *argv);
  size_t i = 0;
  argv[i++] = (char *)cfg.crun;
  argv[i++] = xasprintf("--root=%s", cfg.crun_root);
  argv[i++] = xasprintf("--log=%s", log_path);
  if (cfg.cgroup_manager) argv[i++] = xasprintf("--cgroup-manager=%s", cfg.cgroup_manager);
  for (size_t j = 0; j < n; j++) argv[i++] = (char *)args[j];
  argv[i] = NULL;
  return argv;
}

// Frees the global options crun_argv allocated (they precede the subcommand, which never
// starts with "--").
static void free_crun_argv(char **argv) {
  for (size_t i = 1; argv[i] && !strncmp(argv[i], "--", 2); i++) free(argv[i]);
  free(argv);
}

// fds: what the child gets as 0, 1, 2 (all > 2 in the agent, see ensure_std_fds).
static pid_t spawn(char **argv, const int fds[3]) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  setsid();  // away from the agent's session and console
  for (int i = 0; i < 3; i++) dup2(fds[i], i);  // dup2 clears close-on-exec
  execv(argv[0], argv);
  _exit(127);
}

static int dev_null(void) { return open("/dev/null", O_RDWR | O_CLOEXEC); }

static char *crun_error(const struct op *op, int st) {
  char text[2048];
  char *msg = NULL;
  if (read_small(op->log_path, text, sizeof text) > 0 && trim(text)[0]) msg = xstrdup(trim(text));
  else if (WIFEXITED(st) && WEXITSTATUS(st) == 127) msg = xasprintf("cannot run %s", cfg.crun);
  else if (WIFEXITED(st)) msg = xasprintf("crun exited with status %d", WEXITSTATUS(st));
  else msg = xasprintf("crun was killed by signal %d", WTERMSIG(st));
  return msg;
}

static void op_free(struct op *op) {
  if (op->console_fd >= 0) close(op->console_fd);
  if (op->console_path) unlink(op->console_path);
  if (op->log_path) unlink(op->log_path);
  free(op->console_path);
  free(op->log_path);
  free(op->pid_file);
  free(op);
}

// Starts `crun ARGS` for a request; its exit calls op_done. Returns NULL (request answered
// with an error) if it cannot be started.
static struct op *op_start(struct container *c, uint64_t conn_id, struct request *req, const char *const *args,
                           const int fds[3], int console_fd, char *console_path, char *pid_file) {
  struct op *op = xcalloc(1, sizeof *op);
  op->method = req->method;
  op->conn_id = conn_id;
  op->req_id = req->id;
  op->c = c;
  op->console_fd = console_fd;
  op->console_path = console_path;
  op->pid_file = pid_file;
  op->log_path = xasprintf("%s/logs/%llu.log", cfg.state_dir, ++serial);
  unlink(op->log_path);
  char **argv = crun_argv(op->log_path, args);
  int null_fds[3] = {-1, -1, -1};
  if (!fds) {
    int fd = dev_null();
    null_fds[0] = null_fds[1] = null_fds[2] = fd;
    fds = null_fds;
  }
  op->pid = spawn(argv, fds);
  int err = errno;
  if (null_fds[0] >= 0) close(null_fds[0]);
  free_crun_argv(argv);
  if (op->pid < 0) {
    respond(conn_id, req->id, E_INTERNAL, "%s: cannot fork crun: %s", method_name(req->method), strerror(err));
    op_free(op);
    return NULL;
  }
  log_msg(LOG_DEBUG, "container %s: crun %s (pid %d)", c->id, args[0], op->pid);
  c->busy = true;
  op->next = ops;
  ops = op;
  return op;
}

// Runs crun synchronously (cleanup paths and shutdown only). Returns its wait status.
static int crun_sync(const char *const *args) {
  char *log_path = xasprintf("%s/logs/%llu.log", cfg.state_dir, ++serial);
  char **argv = crun_argv(log_path, args);
  int fd = dev_null();
  int fds[3] = {fd, fd, fd};
  pid_t pid = spawn(argv, fds);
  close(fd);
  free_crun_argv(argv);
  int st = -1;
  if (pid > 0) {
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
  }
  unlink(log_path);
  free(log_path);
  return st;
}

static int read_pid_file(const char *path) {
  char text[64];
  if (read_small(path, text, sizeof text) <= 0) return -1;
  long pid = strtol(trim(text), NULL, 10);
  return pid > 0 ? (int)pid : -1;
}

// The cgroup v2 directory of a process, from /proc/PID/cgroup's "0::/path" line.
static char *cgroup_of(pid_t pid) {
  char path[64], text[4096];
  snprintf(path, sizeof path, "/proc/%d/cgroup", pid);
  if (read_small(path, text, sizeof text) < 0) return xstrdup("");
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (!strncmp(line, "0::", 3)) {
      const char *rel = line + 3;
      if (!strcmp(rel, "/")) return xstrdup("");  // not in a cgroup of its own
      return xasprintf("%s%s", cfg.cgroup_root, rel);
    }
  }
  return xstrdup("");
}

// A console socket for crun --console-socket; crun sends the pty master over it.
static int console_socket(char **path_out) {
  char *path = xasprintf("%s/sock/%llu.sock", cfg.state_dir, ++serial);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    free(path);
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(sa.sun_path, path);
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4) < 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    free(path);
    errno = e;
    return -1;
  }
  *path_out = path;
  return fd;
}

// crun has exited by now, so its connection and message wait in the socket.
static int receive_pty(int listen_fd) {
  int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return -1;
  char data[256];
  struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * 4)];
  } control;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  int pty = -1;
  if (recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT) >= 0) {
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int *fds = (int *)CMSG_DATA(cm);
      for (size_t i = 0; i < n; i++) {
        if (pty < 0) pty = fds[i];
        else close(fds[i]);
      }
    }
  }
  close(fd);
  return pty;
}

// Wires a received pty master into the process's streams.
static void attach_pty(struct process *p, int pty) {
  int flags = fcntl(pty, F_GETFL);
  fcntl(pty, F_SETFL, flags | O_NONBLOCK);
  p->pty = pty;
  p->streams[S_STDOUT].h.fd = fcntl(pty, F_DUPFD_CLOEXEC, 3);
  if (p->streams[S_STDIN].present) p->streams[S_STDIN].h.fd = fcntl(pty, F_DUPFD_CLOEXEC, 3);
  for (int k = 0; k < 3; k++) stream_update(&p->streams[k]);
}

// Makes the process's pipes; fills child[] with what crun gets as fds 0-2. For a terminal the
// child gets /dev/null (crun hands the container a pty through the console socket instead).
static int make_stdio(struct process *p, int child[3]) {
  int null_fd = dev_null();
  if (null_fd < 0) return -1;
  for (int k = 0; k < 3; k++) child[k] = -1;
  if (!p->terminal) {
    for (int k = 0; k < 3; k++) {
      if (!p->streams[k].present) continue;
      int fds[2];
      if (pipe2(fds, O_CLOEXEC) < 0) {
        int e = errno;
        for (int j = 0; j < k; j++)
          if (child[j] >= 0) close(child[j]);
        close(null_fd);
        errno = e;
        return -1;
      }
      int mine = k == S_STDIN ? fds[1] : fds[0];
      child[k] = k == S_STDIN ? fds[0] : fds[1];
      fcntl(mine, F_SETFL, O_NONBLOCK);
      p->streams[k].h.fd = mine;
    }
  }
  for (int k = 0; k < 3; k++) {
    if (child[k] < 0) child[k] = fcntl(null_fd, F_DUPFD_CLOEXEC, 3);
  }
  close(null_fd);
  return 0;
}

static void close_child_fds(int child[3]) {
  for (int k = 0; k < 3; k++)
    if (child[k] >= 0) close(child[k]);
}

// ---------------------------------------------------------------------------------------------
// crun operations: start and completion

static void op_done(struct op *op, int st) {
  struct container *c = op->c;
  bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  char *err = ok ? NULL : crun_error(op, st);
  const char *name = method_name(op->method);
  c->busy = false;

  switch (op->method) {
    case M_CREATE: {
      struct process *p = c->procs;
      int pid = ok ? read_pid_file(op->pid_file) : -1;
      int pty = -1;
      if (ok && pid < 0) err = xasprintf("crun wrote no pid to %s", op->pid_file);
      if (ok && pid > 0 && p->terminal && (pty = receive_pty(op->console_fd)) < 0)
        err = xstrdup("crun did not pass a pty through the console socket");
      if (err) {
        if (ok) {
          const char *args[] = {"delete", "--force", c->id, NULL};
          crun_sync(args);
        }
        log_msg(LOG_INFO, "container %s: create failed: %s", c->id, err);
        respond(op->conn_id, op->req_id, ok ? E_INTERNAL : E_RUNTIME, "%s %s: %s", name, c->id, err);
        container_remove(c, "its creation failed");
        c = NULL;
        break;
      }
      if (pty >= 0) attach_pty(p, pty);
      free(c->cgroup);
      c->cgroup = cgroup_of(pid);
      c->state = C_CREATED;
      process_started(p, pid);
      log_msg(LOG_INFO, "container %s created (init pid %d, cgroup %s)", c->id, pid, c->cgroup[0] ? c->cgroup : "-");
      respond_pid(op->conn_id, op->req_id, M_CREATE, pid);
      break;
    }
    case M_START:
      if (err) {
        respond(op->conn_id, op->req_id, E_RUNTIME, "%s %s: %s", name, c->id, err);
        break;
      }
      if (c->state == C_CREATED) c->state = C_RUNNING;
      respond_pid(op->conn_id, op->req_id, M_START, c->procs->pid);
      break;
    case M_EXEC: {
      struct process *p = op->p;
      int pid = ok ? read_pid_file(op->pid_file) : -1;
      int pty = -1;
      if (ok && pid < 0) err = xasprintf("crun wrote no pid to %s", op->pid_file);
      if (ok && pid > 0 && p->terminal && (pty = receive_pty(op->console_fd)) < 0) {
        err = xstrdup("crun did not pass a pty through the console socket");
        kill(pid, SIGKILL);  // reaped later and forgotten (unclaimed)
      }
      if (err) {
        respond(op->conn_id, op->req_id, ok ? E_INTERNAL : E_RUNTIME, "%s %s/%s: %s", name, c->id, p->exec_id, err);
        process_remove(p, "its exec failed");
        break;
      }
      if (pty >= 0) attach_pty(p, pty);
      process_started(p, pid);
      respond_pid(op->conn_id, op->req_id, M_EXEC, pid);
      break;
    }
    case M_SIGNAL:
    case M_PAUSE:
    case M_RESUME:
      if (err) {
        respond(op->conn_id, op->req_id, E_RUNTIME, "%s %s: %s", name, c->id, err);
        break;
      }
      if (op->method == M_PAUSE && c->state == C_RUNNING) c->state = C_PAUSED;
      if (op->method == M_RESUME && c->state == C_PAUSED) c->state = C_RUNNING;
      respond_ok(op->conn_id, op->req_id);
      break;
    case M_DELETE:
      if (err) {
        respond(op->conn_id, op->req_id, E_RUNTIME, "%s %s: %s", name, c->id, err);
        break;
      }
      // crun killed the container; make sure nothing of it survives, then wait for the reaps.
      for (struct process *p = c->procs; p; p = p->next)
        if (p->pid && !p->exited) kill(p->pid, SIGKILL);
      c->busy = true;  // nothing else may run on a container being deleted
      c->deleting = true;
      c->delete_conn = op->conn_id;
      c->delete_req = op->req_id;
      maybe_finish_delete(c);  // may free c
      c = NULL;
      break;
  }
  free(err);
  op_free(op);
  if (c) container_drain(c);
}

static void reap_one(pid_t pid, int st) {
  for (struct op **pp = &ops; *pp; pp = &(*pp)->next) {
    if ((*pp)->pid == pid) {
      struct op *op = *pp;
      *pp = op->next;
      op_done(op, st);
      return;
    }
  }
  int64_t now = now_realtime_ns();
  for (struct container *c = containers; c; c = c->next) {
    for (struct process *p = c->procs; p; p = p->next) {
      if (p->pid == pid && !p->exited) {
        process_exited(p, st, now);
        return;
      }
    }
  }
  // Not known (yet): crun's own helpers, or a container process whose pid file we have not
  // read. Keep the newest statuses.
  if (n_unclaimed == MAX_UNCLAIMED) {
    memmove(&unclaimed[0], &unclaimed[1], sizeof unclaimed[0] * (MAX_UNCLAIMED - 1));
    n_unclaimed--;
  }
  unclaimed[n_unclaimed].pid = pid;
  unclaimed[n_unclaimed].status = st;
  unclaimed[n_unclaimed].at_ns = now;
  n_unclaimed++;
}

void reap_children(void) {
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return;
    reap_one(pid, st);
  }
}

// ---------------------------------------------------------------------------------------------
// request handlers

static void do_create(struct conn *conn, struct request *req) {
  const char *id = req->container_id;
  if (find_container(id)) {
    respond(conn->id, req->id, E_ALREADY_EXISTS, "CreateContainer %s: the container already exists", id);
    return;
  }
  if (req->payload_len == 0) {
    respond(conn->id, req->id, E_INVALID_ARGUMENT, "CreateContainer %s: oci_spec_json is empty", id);
    return;
  }
  struct container *c = xcalloc(1, sizeof *c);
  c->id = xstrdup(id);
  c->dir = xasprintf("%s/containers/%s", cfg.state_dir, id);
  c->cgroup = xstrdup("");
  c->state = C_CREATING;
  c->next = containers;
  containers = c;
  struct process *p = process_new(c, "", &req->stdio);

  char *config = xasprintf("%s/config.json", c->dir);
  char *pid_file = xasprintf("%s/init.pid", c->dir);
  char *console_path = NULL;
  int console_fd = -1;
  int child[3] = {-1, -1, -1};
  const char *failed = NULL;
  int e = 0;
  if (mkdir_p(c->dir, 0700) < 0) failed = "cannot create the bundle directory";
  else if (write_file(config, req->payload, req->payload_len) < 0) failed = "cannot write config.json";
  else if (p->terminal && (console_fd = console_socket(&console_path)) < 0) failed = "cannot create a console socket";
  else if (make_stdio(p, child) < 0) failed = "cannot create stdio pipes";
  e = errno;
  unlink(pid_file);
  free(config);
  if (failed) {
    respond(conn->id, req->id, E_INTERNAL, "CreateContainer %s: %s: %s", id, failed, strerror(e));
    if (console_fd >= 0) close(console_fd);
    if (console_path) unlink(console_path);
    free(console_path);
    free(pid_file);
    container_remove(c, "its creation failed");
    return;
  }
  char *console_arg = console_path ? xasprintf("--console-socket=%s", console_path) : NULL;
  char *pid_arg = xasprintf("--pid-file=%s", pid_file);
  char *bundle_arg = xasprintf("--bundle=%s", c->dir);
  const char *args[8];
  int n = 0;
  args[n++] = "create";
  args[n++] = bundle_arg;
  args[n++] = pid_arg;
  if (console_arg) args[n++] = console_arg;
  if (no_pivot) args[n++] = "--no-pivot";
  args[n++] = id;
  args[n] = NULL;
  struct op *op = op_start(c, conn->id, req, args, child, console_fd, console_path, pid_file);
  close_child_fds(child);  // the container keeps its own copies
  free(console_arg);
  free(pid_arg);
  free(bundle_arg);
  if (!op) container_remove(c, "its creation failed");
  else op->p = p;
}

static void do_exec(struct container *c, uint64_t conn_id, struct request *req) {
  if (c->state != C_RUNNING) {
    respond(conn_id, req->id, E_FAILED_PRECONDITION, "ExecProcess %s/%s: the container is %s, not running", c->id,
            req->exec_id, state_names[c->state]);
    return;
  }
  if (find_process(c, req->exec_id)) {
    respond(conn_id, req->id, E_ALREADY_EXISTS, "ExecProcess %s/%s: the exec id is taken", c->id, req->exec_id);
    return;
  }
  if (req->payload_len == 0) {
    respond(conn_id, req->id, E_INVALID_ARGUMENT, "ExecProcess %s/%s: process_json is empty", c->id, req->exec_id);
    return;
  }
  struct process *p = process_new(c, req->exec_id, &req->stdio);
  char *json = xasprintf("%s/exec-%s.json", c->dir, req->exec_id);
  char *pid_file = xasprintf("%s/exec-%s.pid", c->dir, req->exec_id);
  char *console_path = NULL;
  int console_fd = -1;
  int child[3] = {-1, -1, -1};
  const char *failed = NULL;
  if (write_file(json, req->payload, req->payload_len) < 0) failed = "cannot write the process JSON";
  else if (p->terminal && (console_fd = console_socket(&console_path)) < 0) failed = "cannot create a console socket";
  else if (make_stdio(p, child) < 0) failed = "cannot create stdio pipes";
  int e = errno;
  unlink(pid_file);
  if (failed) {
    respond(conn_id, req->id, E_INTERNAL, "ExecProcess %s/%s: %s: %s", c->id, req->exec_id, failed, strerror(e));
    if (console_fd >= 0) close(console_fd);
    if (console_path) unlink(console_path);
    free(console_path);
    free(pid_file);
    free(json);
    process_remove(p, "its exec failed");
    return;
  }
  char *console_arg = console_path ? xasprintf("--console-socket=%s", console_path) : NULL;
  char *pid_arg = xasprintf("--pid-file=%s", pid_file);
  char *process_arg = xasprintf("--process=%s", json);
  const char *args[8];
  int n = 0;
  args[n++] = "exec";
  args[n++] = "--detach";
  args[n++] = pid_arg;
  args[n++] = process_arg;
  if (console_arg) args[n++] = console_arg;
  args[n++] = c->id;
  args[n] = NULL;
  struct op *op = op_start(c, conn_id, req, args, child, console_fd, console_path, pid_file);
  close_child_fds(child);
  free(console_arg);
  free(pid_arg);
  free(process_arg);
  free(json);
  if (!op) process_remove(p, "its exec failed");
  else op->p = p;
}

static void simple_op(struct container *c, uint64_t conn_id, struct request *req, const char *verb, const char *extra,
                      const char *extra2) {
  const char *args[6];
  int n = 0;
  args[n++] = verb;
  if (extra) args[n++] = extra;
  args[n++] = c->id;
  if (extra2) args[n++] = extra2;
  args[n] = NULL;
  op_start(c, conn_id, req, args, NULL, -1, NULL, NULL);
}

// Calls that run crun, one at a time per container.
static void run_call(struct container *c, uint64_t conn_id, struct request *req) {
  const char *name = method_name(req->method);
  switch (req->method) {
    case M_START:
      if (c->state != C_CREATED) {
        respond(conn_id, req->id, E_FAILED_PRECONDITION, "%s %s: the container is %s, not created", name, c->id,
                state_names[c->state]);
        return;
      }
      simple_op(c, conn_id, req, "start", NULL, NULL);
      return;
    case M_EXEC:
      do_exec(c, conn_id, req);
      return;
    case M_SIGNAL: {
      char sig[16];
      snprintf(sig, sizeof sig, "%u", req->signal);
      if (c->procs->exited && c->state == C_STOPPED) {
        respond(conn_id, req->id, E_FAILED_PRECONDITION, "%s %s: the container has stopped", name, c->id);
        return;
      }
      simple_op(c, conn_id, req, "kill", "--all", sig);
      return;
    }
    case M_PAUSE:
      if (c->state != C_RUNNING) {
        respond(conn_id, req->id, E_FAILED_PRECONDITION, "%s %s: the container is %s, not running", name, c->id,
                state_names[c->state]);
        return;
      }
      simple_op(c, conn_id, req, "pause", NULL, NULL);
      return;
    case M_RESUME:
      if (c->state != C_PAUSED) {
        respond(conn_id, req->id, E_FAILED_PRECONDITION, "%s %s: the container is %s, not paused", name, c->id,
                state_names[c->state]);
        return;
      }
      simple_op(c, conn_id, req, "resume", NULL, NULL);
      return;
    case M_DELETE:
      simple_op(c, conn_id, req, "delete", "--force", NULL);
      return;
  }
}

static void container_drain(struct container *c) {
  while (!c->busy && c->queue) {
    struct queued *q = c->queue;
    c->queue = q->next;
    run_call(c, q->conn_id, &q->req);
    request_free(&q->req);
    free(q);
  }
}

// Runs a crun call now, or queues it behind the one in progress. Takes over req's contents.
static void submit(struct container *c, uint64_t conn_id, struct request *req) {
  struct queued *q = xcalloc(1, sizeof *q);
  q->req = *req;
  memset(req, 0, sizeof *req);
  q->conn_id = conn_id;
  struct queued **pp = &c->queue;
  while (*pp) pp = &(*pp)->next;
  *pp = q;
  container_drain(c);
}

static uint64_t read_u64_file(const char *dir, const char *name) {
  char path[700], text[64];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (read_small(path, text, sizeof text) <= 0) return 0;
  if (!strncmp(text, "max", 3)) return 0;
  return strtoull(text, NULL, 10);
}

// "key value" lines (cpu.stat, memory.stat, memory.events): the values of keys[i] into out[i].
static void read_keyed(const char *dir, const char *name, const char *const *keys, uint64_t *const *out) {
  char path[700];
  static char text[16384];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (read_small(path, text, sizeof text) <= 0) return;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *sp = strchr(line, ' ');
    if (!sp) continue;
    *sp = 0;
    for (size_t i = 0; keys[i]; i++)
      if (!strcmp(line, keys[i])) *out[i] = strtoull(sp + 1, NULL, 10);
  }
}

static void read_io(const char *dir, uint64_t io[4]) {
  char path[700];
  static char text[16384];
  snprintf(path, sizeof path, "%s/io.stat", dir);
  if (read_small(path, text, sizeof text) <= 0) return;
  static const char *const keys[] = {"rbytes=", "wbytes=", "rios=", "wios="};
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    for (char *tok = strchr(line, ' '); tok; tok = strchr(tok + 1, ' ')) {
      for (int k = 0; k < 4; k++)
        if (!strncmp(tok + 1, keys[k], strlen(keys[k]))) io[k] += strtoull(tok + 1 + strlen(keys[k]), NULL, 10);
    }
  }
}

static void do_stats(struct container *c, uint64_t conn_id, struct request *req) {
  if (!c->cgroup[0]) {
    respond(conn_id, req->id, E_FAILED_PRECONDITION, "Stats %s: the container has no cgroup of its own", c->id);
    return;
  }
  struct stats_result s;
  memset(&s, 0, sizeof s);
  snprintf(s.cgroup, sizeof s.cgroup, "%s", c->cgroup);
  const char *cpu_keys[] = {"usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec", NULL};
  uint64_t *cpu_out[] = {&s.cpu[0], &s.cpu[1], &s.cpu[2], &s.cpu[3], &s.cpu[4], &s.cpu[5]};
  read_keyed(c->cgroup, "cpu.stat", cpu_keys, cpu_out);
  s.memory[0] = read_u64_file(c->cgroup, "memory.current");
  s.memory[1] = read_u64_file(c->cgroup, "memory.max");
  s.memory[2] = read_u64_file(c->cgroup, "memory.peak");
  const char *mem_keys[] = {"anon", "file", NULL};
  uint64_t *mem_out[] = {&s.memory[3], &s.memory[4]};
  read_keyed(c->cgroup, "memory.stat", mem_keys, mem_out);
  s.memory[5] = read_u64_file(c->cgroup, "memory.swap.current");
  const char *ev_keys[] = {"oom", "oom_kill", NULL};
  uint64_t *ev_out[] = {&s.memory[6], &s.memory[7]};
  read_keyed(c->cgroup, "memory.events", ev_keys, ev_out);
  s.pids[0] = read_u64_file(c->cgroup, "pids.current");
  s.pids[1] = read_u64_file(c->cgroup, "pids.max");
  read_io(c->cgroup, s.io);
  buf_t b = {0};
  encode_stats(&b, &s);
  send_response(conn_id, req->id, E_OK, NULL, M_STATS, &b);
  buf_free(&b);
}

void handle_request(struct conn *conn, struct request *req) {
  uint64_t cid = conn->id;
  const char *name = method_name(req->method);
  if (req->method < 0) {
    respond(cid, req->id, E_UNIMPLEMENTED, "call %d is not implemented by agent %s", -req->method, AGENT_VERSION);
    return;
  }
  if (req->method == M_PING) {
    buf_t b = {0};
    encode_ping(&b, AGENT_VERSION, agent_uptime_ns());
    send_response(cid, req->id, E_OK, NULL, M_PING, &b);
    buf_free(&b);
    return;
  }
  if (req->method == M_SETUP_GUEST) {
    char *msg = NULL;
    int code = guest_setup(req, &msg);
    send_response(cid, req->id, code, msg ? msg : NULL, 0, NULL);
    free(msg);
    return;
  }

  // Everything else names a container (and maybe a process).
  if (!valid_id(req->container_id)) {
    respond(cid, req->id, E_INVALID_ARGUMENT, "%s: invalid container id \"%s\"", name, req->container_id);
    return;
  }
  bool takes_exec = req->method == M_EXEC || req->method == M_SIGNAL || req->method == M_WAIT ||
                    req->method == M_RESIZE || req->method == M_CLOSE_STDIN || req->method == M_DELETE_PROCESS;
  if (takes_exec && (req->exec_id[0] || req->method == M_EXEC) && !valid_id(req->exec_id)) {
    respond(cid, req->id, E_INVALID_ARGUMENT, "%s %s: invalid exec id \"%s\"", name, req->container_id, req->exec_id);
    return;
  }
  if (req->method == M_CREATE) {
    do_create(conn, req);
    return;
  }
  struct container *c = find_container(req->container_id);
  if (!c) {
    respond(cid, req->id, E_NOT_FOUND, "%s: container \"%s\" not found", name, req->container_id);
    return;
  }
  // Calls that go through crun: in order, one at a time.
  if (req->method == M_START || req->method == M_EXEC || req->method == M_PAUSE || req->method == M_RESUME ||
      req->method == M_DELETE || (req->method == M_SIGNAL && req->all)) {
    if (req->method == M_SIGNAL && req->exec_id[0]) {
      respond(cid, req->id, E_INVALID_ARGUMENT, "%s %s/%s: `all` applies to the init process only", name, c->id,
              req->exec_id);
      return;
    }
    if (req->method == M_SIGNAL && (req->signal == 0 || req->signal > 64)) {
      respond(cid, req->id, E_INVALID_ARGUMENT, "%s %s: bad signal %u", name, c->id, req->signal);
      return;
    }
    submit(c, cid, req);
    return;
  }
  if (req->method == M_STATS) {
    do_stats(c, cid, req);
    return;
  }
  if (c->state == C_CREATING) {
    respond(cid, req->id, E_FAILED_PRECONDITION, "%s %s: the container is still being created", name, c->id);
    return;
  }
  struct process *p = find_process(c, req->exec_id);
  if (!p) {
    respond(cid, req->id, E_NOT_FOUND, "%s: process \"%s\" not found in container \"%s\"", name, req->exec_id, c->id);
    return;
  }
  switch (req->method) {
    case M_SIGNAL:
      if (req->signal == 0 || req->signal > 64) {
        respond(cid, req->id, E_INVALID_ARGUMENT, "%s %s/%s: bad signal %u", name, c->id, proc_label(p), req->signal);
      } else if (!p->pid) {
        respond(cid, req->id, E_FAILED_PRECONDITION, "%s %s/%s: the process has not started", name, c->id, proc_label(p));
      } else if (p->exited) {
        respond(cid, req->id, E_FAILED_PRECONDITION, "%s %s/%s: the process has exited", name, c->id, proc_label(p));
      } else if (kill(p->pid, (int)req->signal) < 0) {
        respond(cid, req->id, E_INTERNAL, "%s %s/%s: kill: %s", name, c->id, proc_label(p), strerror(errno));
      } else {
        respond_ok(cid, req->id);
      }
      return;
    case M_WAIT:
      if (p->exited) {
        buf_t b = {0};
        struct wait_result r = {p->status, p->exited_at_ns, p->oom};
        encode_wait(&b, &r);
        send_response(cid, req->id, E_OK, NULL, M_WAIT, &b);
        buf_free(&b);
      } else {
        struct waiter *w = xcalloc(1, sizeof *w);
        w->conn_id = cid;
        w->req_id = req->id;
        w->next = p->waiters;
        p->waiters = w;
      }
      return;
    case M_RESIZE: {
      if (p->pty < 0) {
        respond(cid, req->id, E_FAILED_PRECONDITION, "%s %s/%s: the process has no terminal", name, c->id, proc_label(p));
        return;
      }
      struct winsize ws = {.ws_row = (unsigned short)req->height, .ws_col = (unsigned short)req->width};
      if (ioctl(p->pty, TIOCSWINSZ, &ws) < 0)
        respond(cid, req->id, E_INTERNAL, "%s %s/%s: TIOCSWINSZ: %s", name, c->id, proc_label(p), strerror(errno));
      else
        respond_ok(cid, req->id);
      return;
    }
    case M_CLOSE_STDIN: {
      struct stream *s = &p->streams[S_STDIN];
      // With a connection attached, stdin closes when that connection ends (nothing it
      // delivers is lost); otherwise now.
      if (s->present && !s->finished && !s->pending_eof && !s->conn) stream_input(s, FK_EOF, NULL, 0);
      respond_ok(cid, req->id);
      return;
    }
    case M_DELETE_PROCESS:
      if (!p->exec_id[0]) {
        respond(cid, req->id, E_INVALID_ARGUMENT, "%s %s: the init process goes with DeleteContainer", name, c->id);
      } else if (!p->pid || !p->exited) {
        respond(cid, req->id, E_FAILED_PRECONDITION, "%s %s/%s: the process is still running", name, c->id, p->exec_id);
      } else {
        process_remove(p, "the process was deleted");
        respond_ok(cid, req->id);
      }
      return;
  }
  respond(cid, req->id, E_UNIMPLEMENTED, "%s is not implemented", name);
}

// pivot_root(2) cannot leave the initramfs (the "rootfs" mount). /init normally moves to a
// tmpfs root first; if it could not, crun has to use --no-pivot (MS_MOVE + chroot) instead.
static bool root_is_initramfs(void) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) return false;
  char line[1024];
  bool initramfs = false;
  while (fgets(line, sizeof line, f)) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPEROPTIONS"; the last
    // mount on / is the visible one.
    char root[256], mountpoint[256];
    if (sscanf(line, "%*s %*s %*s %255s %255s", root, mountpoint) != 2 || strcmp(mountpoint, "/")) continue;
    const char *sep = strstr(line, " - ");
    initramfs = sep && !strncmp(sep + 3, "rootfs ", 7);
  }
  fclose(f);
  return initramfs;
}

void containers_init(void) {
  no_pivot = root_is_initramfs();
  if (no_pivot) log_msg(LOG_INFO, "the root is the initramfs: containers are created with crun --no-pivot");
  char *dirs[] = {xasprintf("%s/containers", cfg.state_dir), xasprintf("%s/logs", cfg.state_dir),
                  xasprintf("%s/sock", cfg.state_dir), xstrdup(cfg.crun_root)};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    if (mkdir_p(dirs[i], 0700) < 0) log_msg(LOG_ERROR, "cannot create %s: %s", dirs[i], strerror(errno));
    free(dirs[i]);
  }
  if (access(cfg.crun, X_OK) < 0) log_msg(LOG_ERROR, "the OCI runtime %s cannot be run: %s", cfg.crun, strerror(errno));
}

void containers_shutdown(void) {
  for (struct container *c = containers; c; c = c->next) {
    const char *args[] = {"delete", "--force", c->id, NULL};
    crun_sync(args);
    remove_dir_files(c->dir);
  }
}
