// crun invocations: each RPC that needs the OCI runtime starts crun as a child process (an
// `op`); its exit, seen by the reaper, completes the RPC.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "container.h"

static struct op *ops;

// crun guards against CVE-2019-5736 by re-executing itself, on every call, from a binary a
// container cannot write through (as root: a read-only bind mount of it on a temporary file, with
// its mount and unmount; else a sealed memfd copy), unless it already runs from a fully sealed
// memfd. One such copy made at the agent's start (so a template's clones inherit it) saves an
// exec, a dynamic load and two mount calls per crun call; sealed, it cannot be overwritten either.
static int crun_exe_fd = -1;
#define CRUN_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

void crun_copy_sealed(void) {
  const char *failed = "open";
  int src = open(cfg.crun, O_RDONLY | O_CLOEXEC);
  int fd = -1;
  struct stat st;
  if (src < 0 || fstat(src, &st) < 0) goto fail;
  failed = "memfd_create";
  fd = memfd_create("stencil-crun", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) goto fail;
  failed = "copy";
  for (off_t off = 0; off < st.st_size;) {
    ssize_t n = sendfile(fd, src, &off, (size_t)(st.st_size - off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;  // the file shrank while being copied
      goto fail;
    }
  }
  failed = "seal";
  if (fcntl(fd, F_ADD_SEALS, CRUN_SEALS) < 0) goto fail;
  close(src);
  crun_exe_fd = fd;
  log_msg(LOG_DEBUG, "crun runs from a sealed in-memory copy of %s (%lld bytes)", cfg.crun, (long long)st.st_size);
  return;
fail:
  log_msg(LOG_INFO, "crun runs from %s (re-executing itself on each call): cannot make a sealed copy (%s): %s", cfg.crun, failed,
          strerror(errno));
  if (src >= 0) close(src);
  if (fd >= 0) close(fd);
}

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
void child_reset(const int fds[3]) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  setsid();  // away from the agent's session and console
  for (int i = 0; i < 3; i++) dup2(fds[i], i);  // dup2 clears close-on-exec
}

// Forks and execs crun (argv[0] names it) with fds as its 0, 1, 2.
static pid_t spawn_crun(char **argv, const int fds[3]) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  child_reset(fds);
  if (crun_exe_fd >= 0) fexecve(crun_exe_fd, argv, environ);
  execv(argv[0], argv);
  _exit(127);
}

int dev_null(void) { return open("/dev/null", O_RDWR | O_CLOEXEC); }

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
  if (op->tmp_file) unlink(op->tmp_file);
  free(op->tmp_file);
  free(op->console_path);
  free(op->log_path);
  free(op->pid_file);
  free(op);
}

// Starts `crun ARGS` for a request; its exit calls op_done. Returns NULL (request answered
// with an error) if it cannot be started.
struct op *op_start(struct container *c, uint64_t conn_id, struct request *req, const char *const *args,
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
  op->pid = spawn_crun(argv, fds);
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

// `crun start` without crun: the created init waits reading crun's exec FIFO (in its state
// directory); opening it for writing, unlinking it and writing one byte is what `crun start`
// does to let the init exec the container's process (and what makes crun see the container as
// running). Skipping crun's process saves its exec and dynamic loading, the bulk of a start.
// Only for a spec without poststart hooks (the shim's choice), which crun start would run.
void start_through_exec_fifo(struct container *c, uint64_t conn_id, struct request *req) {
  char *fifo = xasprintf("%s/%s/exec.fifo", cfg.crun_root, c->id);
  // Non-blocking: ENXIO when no init holds it open any more (it died after its creation).
  int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  const char *failed = fd < 0 ? "cannot open" : unlink(fifo) < 0 ? "cannot unlink" : write(fd, "", 1) != 1 ? "cannot write" : NULL;
  int e = errno;
  if (fd >= 0) close(fd);
  if (failed) {
    respond(conn_id, req->id, E_RUNTIME, "StartContainer %s: %s %s: %s%s", c->id, failed, fifo, strerror(e),
            e == ENXIO ? " (its init no longer waits there)" : "");
  } else {
    c->state = C_RUNNING;
    log_msg(LOG_DEBUG, "container %s: started through its exec FIFO", c->id);
    respond_pid(conn_id, req->id, M_START, c->procs->pid);
  }
  free(fifo);
}

// Runs crun synchronously (cleanup paths and shutdown only). Returns its wait status.
int crun_sync(const char *const *args) {
  char *log_path = xasprintf("%s/logs/%llu.log", cfg.state_dir, ++serial);
  char **argv = crun_argv(log_path, args);
  int fd = dev_null();
  int fds[3] = {fd, fd, fd};
  pid_t pid = spawn_crun(argv, fds);
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

// ---------------------------------------------------------------------------------------------
// completion

static void op_done(struct op *op, int st) {
  struct container *c = op->c;
  bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  char *err = ok ? NULL : crun_error(op, st);
  // Gone before the reply: a caller that got its answer must not find the request's file.
  if (op->tmp_file) {
    unlink(op->tmp_file);
    free(op->tmp_file);
    op->tmp_file = NULL;
  }
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
    case M_UPDATE:
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
      container_delete(c, op->conn_id, op->req_id);  // may free c
      c = NULL;
      break;
  }
  free(err);
  op_free(op);
  if (c) container_drain(c);
}

// If pid is a crun invocation, completes it and returns true.
bool op_reaped(pid_t pid, int st) {
  for (struct op **pp = &ops; *pp; pp = &(*pp)->next) {
    if ((*pp)->pid == pid) {
      struct op *op = *pp;
      *pp = op->next;
      op_done(op, st);
      return true;
    }
  }
  return false;
}
