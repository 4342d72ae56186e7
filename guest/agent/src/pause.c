// A pod's sandbox container held by the agent's own pause process (CreateContainer.pause): the
// process that keeps the pod's namespaces, made without crun and without a rootfs. crun's create
// of CRI's pause image was the longest step of a pod's start (it sets up a whole container for a
// process that only sleeps); here it is one clone(2) and an exec of the agent binary as `pause`.
// The container's other calls (start, signals, pause/resume, delete) act on that process and its
// cgroup directly; exec and update have nothing to act on and are refused.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "container.h"

static const struct {
  const char *name;
  int flag;
} namespace_flags[] = {
    {"pid", CLONE_NEWPID}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"mount", CLONE_NEWNS}, {"cgroup", CLONE_NEWCGROUP},
};

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

// The pause process (the agent binary run as "pause"): as Kubernetes' pause, it exits 0 on
// SIGINT or SIGTERM and, as a pid namespace's init, reaps whatever is re-parented to it.
int pause_main(void) {
  struct sigaction sa = {0};
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_child;
  sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigaction(SIGCHLD, &sa, NULL);
  while (!stop_signal) pause();
  return 0;
}

// The cgroup's absolute directory, or NULL when the path is not a clean absolute one.
static char *cgroup_dir(const char *path) {
  if (path[0] != '/' || strlen(path) > 256 || strstr(path, "/../") || strstr(path, "/./") || strstr(path, "//"))
    return NULL;
  size_t n = strlen(path);
  if ((n >= 3 && !strcmp(path + n - 3, "/..")) || (n >= 2 && !strcmp(path + n - 2, "/.")))
    return NULL;
  return xasprintf("%s%s", cfg.cgroup_root, path);
}

// Makes the cgroup and its parents, each parent delegating its controllers (as crun does), and
// moves pid into it. 0, or -1 with errno and *step naming what failed.
static int enter_cgroup(const char *dir, pid_t pid, const char **step) {
  size_t root_len = strlen(cfg.cgroup_root);
  char *path = xstrdup(dir);
  int rc = 0;
  for (char *slash = strchr(path + root_len + 1, '/');; slash = strchr(slash + 1, '/')) {
    if (slash) *slash = 0;
    char *parent = xstrdup(path);
    *strrchr(parent, '/') = 0;
    cgroup_delegate(parent);
    free(parent);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
      *step = "cannot make its cgroup";
      rc = -1;
    }
    if (!slash || rc < 0) break;
    *slash = '/';
  }
  free(path);
  if (rc < 0) return -1;
  char *procs = xasprintf("%s/cgroup.procs", dir);
  char text[16];
  int n = snprintf(text, sizeof text, "%d", pid);
  if (write_file(procs, text, (size_t)n) < 0) {
    *step = "cannot move it into its cgroup";
    rc = -1;
  }
  free(procs);
  return rc;
}

// The child: waits for its cgroup, makes the remaining namespaces and execs the pause process.
// Failures go to the parent through `status` (close-on-exec: EOF alone means the exec worked).
static void holder_child(int go, int status, int unshare_flags, const char *hostname, const char *exe) {
  char byte;
  while (read(go, &byte, 1) < 0 && errno == EINTR) {
  }
  const char *step = NULL;
  if (unshare(unshare_flags) < 0) step = "unshare";
  else if ((unshare_flags & CLONE_NEWUTS) && hostname[0] && sethostname(hostname, strlen(hostname)) < 0) step = "sethostname";
  if (!step && chdir("/") < 0) step = "chdir /";
  if (!step) {
    int null = dev_null();
    child_reset((int[3]){null, null, null});
    char *argv[] = {"/pause", NULL};
    char *envp[] = {NULL};
    execve(exe, argv, envp);
    step = "exec";
  }
  char msg[256];
  int n = snprintf(msg, sizeof msg, "%s: %s", step, strerror(errno));
  ssize_t w = write(status, msg, (size_t)n);
  (void)w;
  _exit(127);
}

void pause_create(uint64_t conn_id, struct request *req, struct container *c) {
  const char *id = c->id;
  int flags = 0;
  for (size_t i = 0; i < req->n_pause_namespaces; i++) {
    size_t k = 0;
    while (k < sizeof namespace_flags / sizeof namespace_flags[0] && strcmp(namespace_flags[k].name, req->pause_namespaces[i])) k++;
    if (k == sizeof namespace_flags / sizeof namespace_flags[0]) {
      respond(conn_id, req->id, E_INVALID_ARGUMENT, "CreateContainer %s: pause holder: unknown namespace \"%s\"", id,
              req->pause_namespaces[i]);
      container_remove(c, "its creation failed");
      return;
    }
    flags |= namespace_flags[k].flag;
  }
  char *dir = NULL;
  if (req->pause_cgroup && req->pause_cgroup[0] && !(dir = cgroup_dir(req->pause_cgroup))) {
    respond(conn_id, req->id, E_INVALID_ARGUMENT, "CreateContainer %s: pause holder: cgroup \"%s\" is not a clean absolute path", id,
            req->pause_cgroup);
    container_remove(c, "its creation failed");
    return;
  }
  if (req->stdio.terminal || req->stdio.in || req->stdio.out || req->stdio.err) {
    respond(conn_id, req->id, E_INVALID_ARGUMENT, "CreateContainer %s: pause holder: it has no stdio", id);
    container_remove(c, "its creation failed");
    free(dir);
    return;
  }
  char exe[256];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  int go[2] = {-1, -1}, status[2] = {-1, -1};
  const char *step = NULL;
  pid_t pid = -1;
  if (len <= 0) step = "cannot find the agent binary";
  else if (pipe2(go, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0) step = "pipe";
  if (!step) {
    exe[len] = 0;
    // A new pid namespace is the clone's own (its process is that namespace's init); the others
    // are made by the child once it is in its cgroup (a cgroup namespace's root is that cgroup).
    pid = (pid_t)syscall(SYS_clone, SIGCHLD | (flags & CLONE_NEWPID), 0, NULL, NULL, 0);
    if (pid == 0) {
      close(go[1]);
      close(status[0]);
      holder_child(go[0], status[1], flags & ~CLONE_NEWPID, req->hostname, exe);
    }
    if (pid < 0) step = "clone";
  }
  int e = errno;
  if (go[0] >= 0) close(go[0]);
  if (status[1] >= 0) close(status[1]);
  if (!step && dir && enter_cgroup(dir, pid, &step) < 0) e = errno;
  if (go[1] >= 0) close(go[1]);  // lets the child go on
  char msg[256] = "";
  if (status[0] >= 0 && pid > 0) {
    ssize_t n;
    while ((n = read(status[0], msg, sizeof msg - 1)) < 0 && errno == EINTR) {
    }
    msg[n > 0 ? n : 0] = 0;
  }
  if (status[0] >= 0) close(status[0]);
  if (step || msg[0]) {
    if (pid > 0) kill(pid, SIGKILL);  // reaped by the agent's loop, unclaimed
    if (dir) rmdir(dir);
    respond(conn_id, req->id, E_RUNTIME, "CreateContainer %s: pause holder: %s%s%s", id, step ? step : msg,
            step ? ": " : "", step ? strerror(e) : "");
    container_remove(c, "its creation failed");
    free(dir);
    return;
  }
  c->builtin = true;
  free(c->cgroup);
  c->cgroup = dir ? dir : xstrdup("");
  c->state = C_CREATED;
  process_started(c->procs, pid);
  log_msg(LOG_INFO, "container %s created: the agent's pause process (pid %d, cgroup %s)", id, pid, c->cgroup[0] ? c->cgroup : "-");
  respond_pid(conn_id, req->id, M_CREATE, pid);
}

static int write_freeze(struct container *c, const char *value) {
  if (!c->cgroup[0]) {
    errno = ENOTSUP;
    return -1;
  }
  char *path = xasprintf("%s/cgroup.freeze", c->cgroup);
  int rc = write_file(path, value, 1);
  free(path);
  return rc;
}

// The calls crun would run, for a container held by the pause process.
void pause_call(struct container *c, uint64_t conn_id, struct request *req) {
  const char *name = method_name(req->method);
  struct process *init = c->procs;
  int need = req->method == M_START ? C_CREATED : req->method == M_PAUSE ? C_RUNNING : req->method == M_RESUME ? C_PAUSED : -1;
  if (need >= 0 && c->state != need) {
    respond(conn_id, req->id, E_FAILED_PRECONDITION, "%s %s: the container is %s, not %s", name, c->id, state_names[c->state],
            state_names[need]);
    return;
  }
  switch (req->method) {
    case M_START:
      c->state = C_RUNNING;
      respond_pid(conn_id, req->id, M_START, init->pid);
      return;
    case M_SIGNAL:  // `all`: with its own pid namespace, its init's end ends the rest
      if (!init->exited && kill(init->pid, (int)req->signal) < 0)
        respond(conn_id, req->id, E_INTERNAL, "%s %s: kill: %s", name, c->id, strerror(errno));
      else
        respond_ok(conn_id, req->id);
      return;
    case M_PAUSE:
    case M_RESUME:
      if (write_freeze(c, req->method == M_PAUSE ? "1" : "0") < 0) {
        respond(conn_id, req->id, E_RUNTIME, "%s %s: cannot write cgroup.freeze of %s: %s", name, c->id,
                c->cgroup[0] ? c->cgroup : "(no cgroup)", strerror(errno));
        return;
      }
      c->state = req->method == M_PAUSE ? C_PAUSED : C_RUNNING;
      respond_ok(conn_id, req->id);
      return;
    case M_DELETE:
      if (c->state == C_PAUSED) write_freeze(c, "0");  // a frozen process cannot die
      container_delete(c, conn_id, req->id);  // may free c
      return;
    default:
      respond(conn_id, req->id, E_FAILED_PRECONDITION,
              "%s %s: the pod's sandbox is the agent's pause process, which runs nothing else", name, c->id);
      return;
  }
}
