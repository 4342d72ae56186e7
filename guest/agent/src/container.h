// Internal declarations shared by the container code of the agent: container.c (the table and
// the life cycle), requests.c (RPC handlers), crun.c (crun invocations), relay.c (stdio) and
// stats.c. The agent-wide interface is in agent.h.
#ifndef STENCIL_AGENT_CONTAINER_H
#define STENCIL_AGENT_CONTAINER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

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
extern const char *const state_names[];  // by enum cstate

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
  bool builtin;  // held by the agent's own pause process (pause.c), unknown to crun
  bool start_through_exec_fifo;  // StartContainer writes crun's exec FIFO (proto field 6)
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
  char *tmp_file;  // removed when crun has exited (update: the resources file)
  int console_fd;  // listening console socket for a terminal, -1
  char *console_path;
  struct op *next;
};

extern struct container *containers;
extern bool no_pivot;              // crun create --no-pivot (the root is the initramfs)
extern unsigned long long serial;  // numbers crun log files and console sockets

// ---- container.c: helpers, the table, life cycle ----
bool valid_id(const char *s);
void respond(uint64_t conn_id, uint64_t req_id, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void respond_ok(uint64_t conn_id, uint64_t req_id);
void respond_pid(uint64_t conn_id, uint64_t req_id, int field, pid_t pid);
int write_file(const char *path, const void *data, size_t n);
// Reads up to cap-1 bytes of a (small) file into buf, NUL-terminated; -1 if it cannot be read.
ssize_t read_small(const char *path, char *buf, size_t cap);
char *trim(char *s);
struct container *find_container(const char *id);
struct process *find_process(struct container *c, const char *exec_id);
const char *proc_label(const struct process *p);
struct container *container_new(const char *id);
struct process *process_new(struct container *c, const char *exec_id, const struct stdio_mode *m);
void process_remove(struct process *p, const char *why);
void container_remove(struct container *c, const char *why);
void maybe_finish_delete(struct container *c);
// Kills what still runs of the container and forgets it once all is reaped (may free c).
void container_delete(struct container *c, uint64_t conn_id, uint64_t req_id);
void process_started(struct process *p, pid_t pid);

// ---- relay.c: stdio streams, pipes and ptys ----
void on_stream_event(struct handler *h, uint32_t events);
void stream_close_fd(struct stream *s);
// Cuts the link between a stream and its connection (both stay alive).
struct conn *unlink_conn(struct stream *s);
void drain_output(struct stream *s);
int console_socket(char **path_out);
int receive_pty(int listen_fd);
void attach_pty(struct process *p, int pty);
int make_stdio(struct process *p, int child[3]);
void close_child_fds(int child[3]);

// ---- crun.c ----
int dev_null(void);
// Makes the sealed in-memory copy of crun that every crun call then runs from.
void crun_copy_sealed(void);
struct op *op_start(struct container *c, uint64_t conn_id, struct request *req, const char *const *args,
                    const int fds[3], int console_fd, char *console_path, char *pid_file);
int crun_sync(const char *const *args);
void start_through_exec_fifo(struct container *c, uint64_t conn_id, struct request *req);
bool op_reaped(pid_t pid, int st);

// ---- pause.c: a sandbox held by the agent's own pause process ----
void pause_create(uint64_t conn_id, struct request *req, struct container *c);
void pause_call(struct container *c, uint64_t conn_id, struct request *req);

// ---- requests.c, stats.c ----
void container_drain(struct container *c);
void do_stats(struct container *c, uint64_t conn_id, struct request *req);

#endif
