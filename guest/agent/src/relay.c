// Process stdio: the pipes or pty a process gets, and the relays between them and the host's
// stdio connections (output with backpressure, input with EOF handling).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "container.h"

void stream_close_fd(struct stream *s) {
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
struct conn *unlink_conn(struct stream *s) {
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

void on_stream_event(struct handler *h, uint32_t events) {
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

void stream_release(struct stream *s) {
  unlink_conn(s);
  stream_update(s);  // an output pipe is no longer read; pending stdin still goes in
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

// The process is being forgotten and its writers are dead (reaped): move what is left in the
// pipe (bounded by its capacity) to the attached connection and end the stream properly.
void drain_output(struct stream *s) {
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

// ---------------------------------------------------------------------------------------------
// pipes and ptys

// A console socket for crun --console-socket; crun sends the pty master over it.
int console_socket(char **path_out) {
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
int receive_pty(int listen_fd) {
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
void attach_pty(struct process *p, int pty) {
  int flags = fcntl(pty, F_GETFL);
  fcntl(pty, F_SETFL, flags | O_NONBLOCK);
  p->pty = pty;
  p->streams[S_STDOUT].h.fd = fcntl(pty, F_DUPFD_CLOEXEC, 3);
  if (p->streams[S_STDIN].present) p->streams[S_STDIN].h.fd = fcntl(pty, F_DUPFD_CLOEXEC, 3);
  for (int k = 0; k < 3; k++) stream_update(&p->streams[k]);
}

// Makes the process's pipes; fills child[] with what crun gets as fds 0-2. For a terminal the
// child gets /dev/null (crun hands the container a pty through the console socket instead).
int make_stdio(struct process *p, int child[3]) {
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

void close_child_fds(int child[3]) {
  for (int k = 0; k < 3; k++)
    if (child[k] >= 0) close(child[k]);
}
