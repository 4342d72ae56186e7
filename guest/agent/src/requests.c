// The RPC handlers: validation, dispatch, and the calls that run crun (one at a time per
// container, queued behind the one in progress).
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "container.h"

const char *const state_names[] = {"creating", "created", "running", "paused", "stopped"};

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
  struct container *c = container_new(id);
  struct process *p = process_new(c, "", &req->stdio);
  c->start_through_exec_fifo = req->start_through_exec_fifo;
  if (req->pause) {
    pause_create(conn->id, req, c);
    return;
  }

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

// Whether a JSON text is an object: its first and last non-blank characters are braces (crun
// parses the rest and reports what is wrong inside).
static bool json_object_text(const uint8_t *p, size_t n) {
  const char *blank = " \t\r\n";
  size_t i = 0;
  while (i < n && p[i] && strchr(blank, p[i])) i++;
  while (n > i && p[n - 1] && strchr(blank, p[n - 1])) n--;
  return n - i >= 2 && p[i] == '{' && p[n - 1] == '}';
}

static void do_update(struct container *c, uint64_t conn_id, struct request *req) {
  if (c->state != C_CREATED && c->state != C_RUNNING && c->state != C_PAUSED) {
    respond(conn_id, req->id, E_FAILED_PRECONDITION, "UpdateContainer %s: the container is %s, not running", c->id,
            state_names[c->state]);
    return;
  }
  // crun calls on a container run one at a time, so one file name per container suffices.
  char *path = xasprintf("%s/resources.json", c->dir);
  if (write_file(path, req->payload, req->payload_len) < 0) {
    respond(conn_id, req->id, E_INTERNAL, "UpdateContainer %s: cannot write %s: %s", c->id, path, strerror(errno));
    unlink(path);
    free(path);
    return;
  }
  char *resources_arg = xasprintf("--resources=%s", path);
  const char *args[] = {"update", resources_arg, c->id, NULL};
  struct op *op = op_start(c, conn_id, req, args, NULL, -1, NULL, NULL);
  free(resources_arg);
  if (op) op->tmp_file = path;
  else {
    unlink(path);
    free(path);
  }
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
  if (c->builtin) {
    pause_call(c, conn_id, req);
    return;
  }
  switch (req->method) {
    case M_START:
      if (c->state != C_CREATED) {
        respond(conn_id, req->id, E_FAILED_PRECONDITION, "%s %s: the container is %s, not created", name, c->id,
                state_names[c->state]);
        return;
      }
      if (c->start_through_exec_fifo) start_through_exec_fifo(c, conn_id, req);
      else simple_op(c, conn_id, req, "start", NULL, NULL);
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
    case M_UPDATE:
      do_update(c, conn_id, req);
      return;
  }
}

void container_drain(struct container *c) {
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

void handle_request(struct conn *conn, struct request *req) {
  uint64_t cid = conn->id;
  const char *name = method_name(req->method);
  if (req->method < 0) {
    respond(cid, req->id, E_UNIMPLEMENTED, "call %d is not implemented by agent %s", -req->method, AGENT_VERSION);
    return;
  }
  if (req->method == M_PING) {
    buf_t b = {0};
    encode_ping(&b, AGENT_VERSION, agent_uptime_ns(), vsock_local_cid());
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
      req->method == M_DELETE || req->method == M_UPDATE || (req->method == M_SIGNAL && req->all)) {
    if (req->method == M_SIGNAL && req->exec_id[0]) {
      respond(cid, req->id, E_INVALID_ARGUMENT, "%s %s/%s: `all` applies to the init process only", name, c->id,
              req->exec_id);
      return;
    }
    if (req->method == M_SIGNAL && (req->signal == 0 || req->signal > 64)) {
      respond(cid, req->id, E_INVALID_ARGUMENT, "%s %s: bad signal %u", name, c->id, req->signal);
      return;
    }
    if (req->method == M_UPDATE && !json_object_text(req->payload, req->payload_len)) {
      respond(cid, req->id, E_INVALID_ARGUMENT, "%s %s: resources_json is not a JSON object", name, c->id);
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
