// Shared declarations of the Stencil guest agent: configuration, the event loop, connections,
// containers and processes. The agent is single-threaded: one epoll loop drives sockets, pipes,
// ptys and a signalfd for SIGCHLD; the OCI runtime (crun) runs as child processes whose exit
// completes the RPC that started them.
#ifndef STENCIL_AGENT_H
#define STENCIL_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "proto.h"

// ---- configuration (main.c) ----
struct agent_config {
  const char *crun;            // crun binary
  const char *state_dir;       // bundles, logs, console sockets
  const char *crun_root;       // crun --root
  const char *cgroup_root;     // where cgroup2 is mounted
  const char *cgroup_manager;  // crun --cgroup-manager, NULL = crun's default
  bool guest_setup;            // mount cgroup2 if missing, enable controllers
  int log_level;
};
extern struct agent_config cfg;

enum { LOG_ERROR = 0, LOG_INFO = 1, LOG_DEBUG = 2 };
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int64_t now_realtime_ns(void);
uint64_t now_monotonic_ns(void);
uint64_t agent_uptime_ns(void);

// ---- event loop (main.c) ----
struct handler {
  void (*fn)(struct handler *h, uint32_t events);
  bool dead;        // set when the owner is gone; pending events are then ignored
  uint32_t events;  // events currently registered (0 = not in the epoll set)
  int fd;
};
// Registers, changes or removes (want = 0) h->fd in the epoll set. Removing rather than waiting
// for nothing matters: epoll reports hang-ups even for an empty event mask.
void watch(struct handler *h, uint32_t want);
// Frees p (with fn) after the current batch of events, so events already fetched for it are
// still safe to look at (their handler is marked dead).
void defer_free(void (*fn)(void *), void *p);

// ---- connections (main.c) ----
struct stream;
struct port_fwd;

struct conn {
  struct handler h;
  uint64_t id;
  int role;  // 0 until the hello
  bool dead;
  bool read_eof;
  buf_t rbuf, wbuf;
  struct stream *stream;  // stdio roles: the attached stream (NULL once finished)
  struct port_fwd *fwd;   // ROLE_PORT: the forwarded TCP connection
  struct conn *next;
};

// Queues a RESPONSE on connection conn_id, if it still exists.
void send_response(uint64_t conn_id, uint64_t req_id, int code, const char *message, int field, const buf_t *result);
void conn_flush(struct conn *c);
void conn_update(struct conn *c);
void conn_close(struct conn *c);
// Runs queued frames again (a stdin connection blocked on a full pipe).
void conn_process(struct conn *c);

// ---- containers (container.c) ----
enum { S_STDIN = 0, S_STDOUT = 1, S_STDERR = 2 };

struct process;

struct stream {
  struct handler h;
  struct process *proc;
  int kind;          // S_STDIN, S_STDOUT, S_STDERR
  bool present;      // the process has this stream (a pipe or the pty)
  bool finished;     // output: EOF queued to the host; input: closed
  bool pty;          // fd is (a dup of) the pty master
  bool close_requested;  // stdin: close once the attached connection ends
  bool pending_eof;  // stdin: close once `pending` is written
  struct conn *conn;
  buf_t pending;  // stdin: bytes received, not yet written into the pipe
};

// Output connections stop pulling from the pipe while this much is queued to the host.
#define OUTPUT_HIGH_WATER (64u << 10)

void containers_init(void);
void handle_request(struct conn *c, struct request *req);
// A stdio connection's hello: attaches it or returns an error code (message in *msg).
int stream_attach(struct conn *c, const struct hello *h, char **msg);
void stream_update(struct stream *s);
// The attached connection is going away (closed by the host or the agent).
void stream_detach(struct stream *s);
// Lets go of the stream's connection without ending the stream (a DETACH frame).
void stream_release(struct stream *s);
// A stdin frame arrived on the attached connection.
void stream_input(struct stream *s, int kind, const uint8_t *p, size_t n);
void reap_children(void);
// The agent binary run as `pause` (argv[0]): a pod's pause process (pause.c).
int pause_main(void);
// Kills every container (used on SIGTERM, synchronous).
void containers_shutdown(void);

// In a forked child about to exec: no blocked signals, SIGPIPE default, a session of its own, and
// fds as its 0, 1, 2 (crun's and the pause process's setup, crun.c).
void child_reset(const int fds[3]);

// ---- port forwarding (port.c) ----
// A PORT connection's hello: connects to 127.0.0.1:h->port and answers the hello once connected.
void port_open(struct conn *c, const struct hello *h);
// A DATA or EOF frame from the host.
void port_input(struct port_fwd *f, int kind, const uint8_t *p, size_t n);
// True while the host's frames must wait (connecting, or earlier data not yet in the socket).
bool port_blocked(const struct conn *c);
// Re-evaluates what the socket waits for (e.g. once the connection has room for more output).
void port_update(struct port_fwd *f);
// The connection is going away: the TCP connection goes with it.
void port_conn_gone(struct port_fwd *f);

// ---- pod network (net.c) ----
// Applies SetupGuest's interfaces and routes with the guest's busybox `ip`: 0 or an error code,
// *msg naming the step that failed and ip's own message.
int guest_configure_network(const struct request *req, char **msg);
// Writes SetupGuest's net.* sysctls to /proc/sys, each key and value checked first.
int guest_apply_sysctls(const struct request *req, char **msg);

// ---- guest setup (guest.c) ----
void guest_init(void);
// 0 or an error code, *msg set to a malloc'd message.
int guest_setup(const struct request *req, char **msg);
// The guest's current vsock CID (it changes when a template's clone resumes); 0 if unknown.
uint32_t vsock_local_cid(void);
// Applies mount(8)-style options: 0 or -1 with errno.
int mount_with_options(const char *source, const char *target, const char *fstype, char *const *options, size_t n);
int mkdir_p(const char *path, mode_t mode);
// Enables every controller of cgroup `dir` for its children (cgroup.subtree_control).
void cgroup_delegate(const char *dir);

#endif
