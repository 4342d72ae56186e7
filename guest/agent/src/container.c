// The container table and the life cycle of containers and processes: lookup, creation and
// removal, exits (reaping) and the agent's start-up and shutdown. The RPC handlers are in
// requests.c, crun invocations in crun.c, stdio relays in relay.c, stats in stats.c.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "container.h"

struct container *containers;
bool no_pivot;  // see root_is_initramfs
unsigned long long serial;

#define MAX_UNCLAIMED 128
static struct {
  pid_t pid;
  int status;
  int64_t at_ns;
} unclaimed[MAX_UNCLAIMED];
static size_t n_unclaimed;

// ---------------------------------------------------------------------------------------------
// helpers

bool valid_id(const char *s) {
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

void respond(uint64_t conn_id, uint64_t req_id, int code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  send_response(conn_id, req_id, code, msg, 0, NULL);
}

void respond_ok(uint64_t conn_id, uint64_t req_id) { send_response(conn_id, req_id, E_OK, NULL, 0, NULL); }

void respond_pid(uint64_t conn_id, uint64_t req_id, int field, pid_t pid) {
  buf_t b = {0};
  encode_pid(&b, (uint32_t)pid);
  send_response(conn_id, req_id, E_OK, NULL, field, &b);
  buf_free(&b);
}

int write_file(const char *path, const void *data, size_t n) {
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
ssize_t read_small(const char *path, char *buf, size_t cap) {
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

char *trim(char *s) {
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

struct container *find_container(const char *id) {
  for (struct container *c = containers; c; c = c->next)
    if (!strcmp(c->id, id)) return c;
  return NULL;
}

struct process *find_process(struct container *c, const char *exec_id) {
  for (struct process *p = c->procs; p; p = p->next)
    if (!strcmp(p->exec_id, exec_id)) return p;
  return NULL;
}

const char *proc_label(const struct process *p) { return p->exec_id[0] ? p->exec_id : "init"; }

// A new container in state C_CREATING, added to the table.
struct container *container_new(const char *id) {
  struct container *c = xcalloc(1, sizeof *c);
  c->id = xstrdup(id);
  c->dir = xasprintf("%s/containers/%s", cfg.state_dir, id);
  c->cgroup = xstrdup("");
  c->state = C_CREATING;
  c->next = containers;
  containers = c;
  return c;
}

// ---------------------------------------------------------------------------------------------
// processes and containers: life cycle

struct process *process_new(struct container *c, const char *exec_id, const struct stdio_mode *m) {
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
void process_remove(struct process *p, const char *why) {
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
void container_remove(struct container *c, const char *why) {
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
  if (c->builtin && c->cgroup[0]) rmdir(c->cgroup);  // crun removes the cgroups of its own
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

// Deletes the container once every process of it is gone: kills those still running, holds off
// other calls, and answers the request when the last exit is reaped (at once if none runs).
void container_delete(struct container *c, uint64_t conn_id, uint64_t req_id) {
  for (struct process *p = c->procs; p; p = p->next)
    if (p->pid && !p->exited) kill(p->pid, SIGKILL);
  c->busy = true;  // nothing else may run on a container being deleted
  c->deleting = true;
  c->delete_conn = conn_id;
  c->delete_req = req_id;
  maybe_finish_delete(c);  // may free c
}

void maybe_finish_delete(struct container *c) {
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
void process_started(struct process *p, pid_t pid) {
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
// reaping

static void reap_one(pid_t pid, int st) {
  if (op_reaped(pid, st)) return;
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
// start-up and shutdown

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
  else crun_copy_sealed();
}

void containers_shutdown(void) {
  for (struct container *c = containers; c; c = c->next) {
    const char *args[] = {"delete", "--force", c->id, NULL};
    if (!c->builtin) crun_sync(args);
    else if (c->procs && c->procs->pid && !c->procs->exited) kill(c->procs->pid, SIGKILL);
    remove_dir_files(c->dir);
  }
}
