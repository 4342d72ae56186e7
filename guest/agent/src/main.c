// Stencil guest agent: command line, listening socket, the epoll loop, and connections with
// their framing (see proto/agent.proto for the protocol).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "linux_abi.h"

struct agent_config cfg = {
    .crun = "/usr/bin/crun",
    .state_dir = "/run/stencil-agent",
    .crun_root = NULL,
    .cgroup_root = "/sys/fs/cgroup",
    .cgroup_manager = NULL,
    .guest_setup = true,
    .log_level = LOG_INFO,
};

static int epfd = -1;
static uint64_t started_ns;
static uint64_t next_conn_id = 1;
static struct conn *conns;

// Control connections stop reading requests while this much output is unsent.
#define CONTROL_WBUF_LIMIT (1u << 20)
#define READ_CHUNK (64u << 10)

// ---------------------------------------------------------------------------------------------
// logging and clocks

void log_msg(int level, const char *fmt, ...) {
  if (level > cfg.log_level) return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  // One write per line so that lines of concurrent writers do not interleave.
  char out[2100];
  int m = snprintf(out, sizeof out, "stencil-agent: %s%.*s\n", level == LOG_ERROR ? "error: " : "", n, line);
  if (m > 0) {
    ssize_t w = write(STDERR_FILENO, out, (size_t)m < sizeof out ? (size_t)m : sizeof out - 1);
    (void)w;
  }
}

int64_t now_realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t now_monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------------
// event loop

void watch(struct handler *h, uint32_t want) {
  if (h->fd < 0 || want == h->events) return;
  struct epoll_event ev = {.events = want, .data.ptr = h};
  int op = want == 0 ? EPOLL_CTL_DEL : h->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(epfd, op, h->fd, &ev) < 0) {
    log_msg(LOG_ERROR, "epoll_ctl(%d, fd %d): %s", op, h->fd, strerror(errno));
    return;
  }
  h->events = want;
}

struct deferred {
  void (*fn)(void *);
  void *p;
  struct deferred *next;
};
static struct deferred *graveyard;

void defer_free(void (*fn)(void *), void *p) {
  struct deferred *d = xmalloc(sizeof *d);
  d->fn = fn;
  d->p = p;
  d->next = graveyard;
  graveyard = d;
}

static void run_deferred(void) {
  while (graveyard) {
    struct deferred *d = graveyard;
    graveyard = d->next;
    d->fn(d->p);
    free(d);
  }
}

// ---------------------------------------------------------------------------------------------
// connections

static struct conn *conn_by_id(uint64_t id) {
  for (struct conn *c = conns; c; c = c->next)
    if (c->id == id && !c->dead) return c;
  return NULL;
}

static void conn_free(void *p) {
  struct conn *c = p;
  buf_free(&c->rbuf);
  buf_free(&c->wbuf);
  free(c);
}

void conn_close(struct conn *c) {
  if (c->dead) return;
  c->dead = true;
  c->h.dead = true;
  watch(&c->h, 0);
  close(c->h.fd);
  c->h.fd = -1;
  if (c->stream) {
    struct stream *s = c->stream;
    c->stream = NULL;
    stream_detach(s);
  }
  if (c->fwd) {
    struct port_fwd *f = c->fwd;
    c->fwd = NULL;
    port_conn_gone(f);
  }
  for (struct conn **pp = &conns; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  log_msg(LOG_DEBUG, "connection %llu closed", (unsigned long long)c->id);
  defer_free(conn_free, c);
}

// The host's next frames must wait: the pipe or socket they go to has not taken the last ones.
static bool input_blocked(const struct conn *c) {
  return (c->role == ROLE_STDIN && c->stream && buf_pending(&c->stream->pending) > 0) || port_blocked(c);
}

void conn_update(struct conn *c) {
  if (c->dead) return;
  uint32_t want = 0;
  if (!c->read_eof && buf_pending(&c->wbuf) < CONTROL_WBUF_LIMIT && !input_blocked(c)) want |= EPOLLIN;
  if (buf_pending(&c->wbuf)) want |= EPOLLOUT;
  watch(&c->h, want);
}

void conn_flush(struct conn *c) {
  while (!c->dead && buf_pending(&c->wbuf)) {
    ssize_t n = send(c->h.fd, buf_head(&c->wbuf), buf_pending(&c->wbuf), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      buf_consume(&c->wbuf, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    log_msg(LOG_DEBUG, "connection %llu: send: %s", (unsigned long long)c->id, strerror(errno));
    conn_close(c);
    return;
  }
  // An output stream waits for room on its connection before reading its pipe again.
  if (c->stream && c->stream->kind != S_STDIN) stream_update(c->stream);
  if (c->fwd) port_update(c->fwd);
  conn_update(c);
}

void send_response(uint64_t conn_id, uint64_t req_id, int code, const char *message, int field, const buf_t *result) {
  struct conn *c = conn_by_id(conn_id);
  if (!c) return;  // the caller went away; the result is dropped
  response_frame(&c->wbuf, req_id, code, message, field, result);
  conn_flush(c);
}

static void on_hello(struct conn *c, const uint8_t *p, size_t n) {
  struct hello h;
  const char *err = NULL;
  if (hello_decode(p, n, &h, &err) < 0) {
    hello_reply_frame(&c->wbuf, E_PROTOCOL, err);
    hello_free(&h);
    return;
  }
  if (h.version != PROTOCOL_VERSION) {
    char *msg = xasprintf("protocol version %u is not supported (the agent speaks %u)", h.version, PROTOCOL_VERSION);
    hello_reply_frame(&c->wbuf, E_FAILED_PRECONDITION, msg);
    free(msg);
  } else if (h.role == ROLE_CONTROL) {
    c->role = ROLE_CONTROL;
    hello_reply_frame(&c->wbuf, E_OK, NULL);
  } else if (h.role == ROLE_STDIN || h.role == ROLE_STDOUT || h.role == ROLE_STDERR) {
    char *msg = NULL;
    int code = stream_attach(c, &h, &msg);
    hello_reply_frame(&c->wbuf, code, msg);
    free(msg);
    if (code == E_OK) {
      c->role = h.role;
      // Output that waited in the pipe can flow now that the reply is queued before it.
      stream_update(c->stream);
    }
  } else if (h.role == ROLE_PORT) {
    port_open(c, &h);  // answers the hello itself, once connected
  } else {
    char *msg = xasprintf("unknown role %d", h.role);
    hello_reply_frame(&c->wbuf, E_INVALID_ARGUMENT, msg);
    free(msg);
  }
  hello_free(&h);
}

// Input connections (stdin, port) carry DATA and EOF from the host; anything else is ignored.
static int is_data_or_eof(const struct conn *c, int kind, const char *what) {
  if (kind == FK_DATA || kind == FK_EOF) return 1;
  log_msg(LOG_INFO, "connection %llu: ignoring frame kind %d on %s", (unsigned long long)c->id, kind, what);
  return 0;
}

static void on_frame(struct conn *c, int kind, const uint8_t *p, size_t n) {
  if (c->role == 0) {
    if (kind == FK_HELLO) {
      on_hello(c, p, n);
    } else {
      char *msg = xasprintf("expected a HELLO frame first, got kind %d", kind);
      hello_reply_frame(&c->wbuf, E_PROTOCOL, msg);
      free(msg);
    }
    return;
  }
  if (c->role == ROLE_CONTROL) {
    if (kind != FK_REQUEST) {
      char *msg = xasprintf("frame kind %d is not allowed on a control connection", kind);
      response_frame(&c->wbuf, 0, E_PROTOCOL, msg, 0, NULL);
      free(msg);
      return;
    }
    struct request req;
    const char *err = NULL;
    if (request_decode(p, n, &req, &err) < 0) {
      response_frame(&c->wbuf, req.id, E_PROTOCOL, err, 0, NULL);
    } else {
      handle_request(c, &req);
    }
    request_free(&req);
    return;
  }
  if (c->role == ROLE_PORT) {
    if (is_data_or_eof(c, kind, "a port connection") && c->fwd) port_input(c->fwd, kind, p, n);
    return;
  }
  if (kind == FK_DETACH) {
    // Let go of the stream, not ending it: output stays in the pipe (after the DETACH answer,
    // which follows every byte read so far); stdin gets no EOF.
    if (c->stream) stream_release(c->stream);
    if (c->role != ROLE_STDIN) frame_put(&c->wbuf, FK_DETACH, NULL, 0);
    return;
  }
  if (c->role == ROLE_STDIN) {
    if (is_data_or_eof(c, kind, "a stdin stream") && c->stream) stream_input(c->stream, kind, p, n);
    return;
  }
  // Output streams carry nothing from the host.
  log_msg(LOG_DEBUG, "connection %llu: ignoring frame kind %d on an output stream", (unsigned long long)c->id, kind);
}

void conn_process(struct conn *c) {
  while (!c->dead && !input_blocked(c)) {
    int kind;
    uint32_t len;
    enum frame_next_result next = frame_next(buf_head(&c->rbuf), buf_pending(&c->rbuf), &kind, &len);
    if (next == FRAME_NEXT_INCOMPLETE) break;
    if (next == FRAME_NEXT_TOO_LARGE) {
      char *msg = xasprintf("frame length %u exceeds the maximum %u: closing the connection", len, MAX_FRAME_PAYLOAD);
      log_msg(LOG_INFO, "connection %llu: %s", (unsigned long long)c->id, msg);
      if (c->role == 0) hello_reply_frame(&c->wbuf, E_PROTOCOL, msg);
      else if (c->role == ROLE_CONTROL) response_frame(&c->wbuf, 0, E_PROTOCOL, msg, 0, NULL);
      free(msg);
      // Best effort: the reply is small and the socket almost certainly has room for it.
      ssize_t w = send(c->h.fd, buf_head(&c->wbuf), buf_pending(&c->wbuf), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)w;
      conn_close(c);
      return;
    }
    on_frame(c, kind, buf_head(&c->rbuf) + FRAME_HEADER, len);
    buf_consume(&c->rbuf, FRAME_HEADER + (size_t)len);
  }
  if (c->dead) return;
  if (c->read_eof && !input_blocked(c)) {
    // Everything the host sent has been handled: a stdin stream sees its EOF now.
    if (c->stream && c->stream->kind == S_STDIN) stream_input(c->stream, FK_EOF, NULL, 0);
    // The host has closed the connection: push out what is queued (best effort) and go.
    conn_flush(c);
    conn_close(c);
    return;
  }
  conn_flush(c);
}

static void on_conn_event(struct handler *h, uint32_t events) {
  struct conn *c = (struct conn *)h;
  if (events & EPOLLOUT) conn_flush(c);
  if (c->dead) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (c->h.events & EPOLLIN) {
      buf_reserve(&c->rbuf, READ_CHUNK);
      ssize_t n = recv(c->h.fd, c->rbuf.data + c->rbuf.len, READ_CHUNK, MSG_DONTWAIT);
      if (n > 0) {
        c->rbuf.len += (size_t)n;
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        if (n < 0) log_msg(LOG_DEBUG, "connection %llu: recv: %s", (unsigned long long)c->id, strerror(errno));
        c->read_eof = true;
      }
    } else if (events & (EPOLLHUP | EPOLLERR)) {
      // Only writing was wanted and the peer is gone.
      conn_close(c);
      return;
    }
    conn_process(c);
  }
}

static void on_accept(struct handler *h, uint32_t events) {
  (void)events;
  for (;;) {
    int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) log_msg(LOG_ERROR, "accept: %s", strerror(errno));
      return;
    }
    struct conn *c = xcalloc(1, sizeof *c);
    c->h.fn = on_conn_event;
    c->h.fd = fd;
    c->id = next_conn_id++;
    c->next = conns;
    conns = c;
    log_msg(LOG_DEBUG, "connection %llu accepted", (unsigned long long)c->id);
    conn_update(c);
  }
}

// ---------------------------------------------------------------------------------------------
// signals

static struct handler signal_handler;

static void on_signal(struct handler *h, uint32_t events) {
  (void)events;
  struct signalfd_siginfo si;
  while (read(h->fd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (si.ssi_signo == SIGCHLD) continue;  // reaped below, all at once
    log_msg(LOG_INFO, "signal %u: deleting every container and exiting", si.ssi_signo);
    containers_shutdown();
    exit(0);
  }
  reap_children();
}

// ---------------------------------------------------------------------------------------------
// startup

static int listen_unix(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    log_msg(LOG_ERROR, "unix socket path too long: %s", path);
    return -1;
  }
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  unlink(path);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

static int listen_vsock(unsigned port) {
  struct sockaddr_vm sa;
  memset(&sa, 0, sizeof sa);
  sa.svm_family = AF_VSOCK;
  sa.svm_cid = VMADDR_CID_ANY;
  sa.svm_port = port;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

static void usage(FILE *f) {
  fprintf(f,
          "Usage: stencil-agent [OPTIONS]\n"
          "Runs OCI containers with crun on behalf of the Stencil shim (proto/agent.proto).\n\n"
          "  --vsock-port N         listen on AF_VSOCK port N (default 1024)\n"
          "  --unix PATH            listen on a Unix socket instead (host tests)\n"
          "  --state-dir DIR        bundles, logs, console sockets (default /run/stencil-agent)\n"
          "  --crun PATH            the OCI runtime (default /usr/bin/crun)\n"
          "  --crun-root DIR        crun --root (default STATE_DIR/crun)\n"
          "  --cgroup-root DIR      cgroup2 mount point (default /sys/fs/cgroup)\n"
          "  --cgroup-manager NAME  passed to crun --cgroup-manager (default: crun's)\n"
          "  --guest-setup          mount cgroup2 if missing and enable its controllers\n"
          "                         (default with vsock; off with --unix)\n"
          "  --no-guest-setup       the opposite\n"
          "  --log-level LEVEL      error, info (default) or debug\n"
          "  --version, --help\n");
}

static void ensure_std_fds(void) {
  // Pipes created later must never land on 0-2 (children get their stdio by dup2 onto those).
  for (int fd = 0; fd < 3; fd++) {
    if (fcntl(fd, F_GETFD) < 0) {
      int n = open("/dev/null", O_RDWR);
      if (n >= 0 && n != fd) {
        dup2(n, fd);
        close(n);
      }
    }
  }
}

int main(int argc, char **argv) {
  const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
  if (argc > 0 && !strcmp(slash ? slash + 1 : argv[0], "pause")) return pause_main();
  const char *unix_path = NULL;
  unsigned vsock_port = 1024;
  int guest_setup = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                          \
  do {                                                        \
    if (!v) {                                                 \
      fprintf(stderr, "stencil-agent: %s needs a value\n", a); \
      return 2;                                               \
    }                                                         \
    i++;                                                      \
  } while (0)
    if (!strcmp(a, "--vsock-port")) {
      NEED_VALUE();
      char *end;
      unsigned long p = strtoul(v, &end, 10);
      if (*end || !*v || p == 0 || p > UINT32_MAX - 1) {
        fprintf(stderr, "stencil-agent: bad port %s\n", v);
        return 2;
      }
      vsock_port = (unsigned)p;
    } else if (!strcmp(a, "--unix")) {
      NEED_VALUE();
      unix_path = v;
    } else if (!strcmp(a, "--state-dir")) {
      NEED_VALUE();
      cfg.state_dir = v;
    } else if (!strcmp(a, "--crun")) {
      NEED_VALUE();
      cfg.crun = v;
    } else if (!strcmp(a, "--crun-root")) {
      NEED_VALUE();
      cfg.crun_root = v;
    } else if (!strcmp(a, "--cgroup-root")) {
      NEED_VALUE();
      cfg.cgroup_root = v;
    } else if (!strcmp(a, "--cgroup-manager")) {
      NEED_VALUE();
      cfg.cgroup_manager = v;
    } else if (!strcmp(a, "--guest-setup")) {
      guest_setup = 1;
    } else if (!strcmp(a, "--no-guest-setup")) {
      guest_setup = 0;
    } else if (!strcmp(a, "--log-level")) {
      NEED_VALUE();
      if (!strcmp(v, "error")) cfg.log_level = LOG_ERROR;
      else if (!strcmp(v, "info")) cfg.log_level = LOG_INFO;
      else if (!strcmp(v, "debug")) cfg.log_level = LOG_DEBUG;
      else {
        fprintf(stderr, "stencil-agent: bad log level %s\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--version")) {
      printf("stencil-agent %s (protocol %d)\n", AGENT_VERSION, PROTOCOL_VERSION);
      return 0;
    } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "stencil-agent: unknown option %s\n", a);
      usage(stderr);
      return 2;
    }
#undef NEED_VALUE
  }
  cfg.guest_setup = guest_setup < 0 ? unix_path == NULL : guest_setup == 1;
  if (!cfg.crun_root) cfg.crun_root = xasprintf("%s/crun", cfg.state_dir);

  ensure_std_fds();
  started_ns = now_monotonic_ns();
  signal(SIGPIPE, SIG_IGN);
  // Orphaned container processes (their parent, crun, exits right away) are re-parented to us.
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) log_msg(LOG_ERROR, "PR_SET_CHILD_SUBREAPER: %s", strerror(errno));

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, NULL);

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    log_msg(LOG_ERROR, "epoll_create1: %s", strerror(errno));
    return 1;
  }
  signal_handler.fn = on_signal;
  signal_handler.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_handler.fd < 0) {
    log_msg(LOG_ERROR, "signalfd: %s", strerror(errno));
    return 1;
  }
  watch(&signal_handler, EPOLLIN);

  if (cfg.guest_setup) guest_init();
  containers_init();

  static struct handler listener = {.fn = on_accept};
  listener.fd = unix_path ? listen_unix(unix_path) : listen_vsock(vsock_port);
  if (listener.fd < 0) {
    if (unix_path) log_msg(LOG_ERROR, "cannot listen on %s: %s", unix_path, strerror(errno));
    else log_msg(LOG_ERROR, "cannot listen on vsock port %u: %s", vsock_port, strerror(errno));
    return 1;
  }
  watch(&listener, EPOLLIN);
  if (unix_path) log_msg(LOG_INFO, "%s listening on %s", AGENT_VERSION, unix_path);
  else log_msg(LOG_INFO, "%s listening on vsock port %u", AGENT_VERSION, vsock_port);

  struct epoll_event events[64];
  for (;;) {
    int n = epoll_wait(epfd, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log_msg(LOG_ERROR, "epoll_wait: %s", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      struct handler *h = events[i].data.ptr;
      if (!h->dead) h->fn(h, events[i].events);
    }
    run_deferred();
  }
}

uint64_t agent_uptime_ns(void) { return now_monotonic_ns() - started_ns; }
