// Port forwarding (CRI PortForward, `kubectl port-forward`): a PORT connection carries one TCP
// connection the agent opens to 127.0.0.1:<port> in its own network namespace, which is the pod's
// (a pod's containers share the VM's). DATA frames carry bytes both ways; an EOF frame is a
// half-close either way (shutdown(SHUT_WR) of the socket; an EOF frame once the socket reads 0).
// The hello is answered only when the connect has completed, so a closed port is an error in the
// reply. A reset or failed socket closes the whole connection, which the host passes on as a reset.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

struct port_fwd {
  struct handler h;  // the TCP socket
  struct conn *conn;
  uint32_t port;
  bool connected;
  bool sock_eof;  // the socket read 0: EOF frame queued to the host
  bool host_eof;  // EOF frame from the host: shut the socket's write side once `pending` is out
  bool shut_wr;
  buf_t pending;  // from the host, not yet written into the socket
};

static void port_free(void *p) {
  struct port_fwd *f = p;
  buf_free(&f->pending);
  free(f);
}

static void port_close_socket(struct port_fwd *f) {
  if (f->h.dead) return;
  f->h.dead = true;
  watch(&f->h, 0);
  close(f->h.fd);
  f->h.fd = -1;
  defer_free(port_free, f);
}

void port_update(struct port_fwd *f) {
  if (!f || f->h.dead) return;
  uint32_t want = 0;
  if (!f->connected) {
    want = EPOLLOUT;
  } else {
    if (!f->sock_eof && f->conn && !f->conn->dead && buf_pending(&f->conn->wbuf) < OUTPUT_HIGH_WATER) want |= EPOLLIN;
    if (buf_pending(&f->pending)) want |= EPOLLOUT;
  }
  watch(&f->h, want);
}

bool port_blocked(const struct conn *c) {
  const struct port_fwd *f = c->fwd;
  return f && (!f->connected || buf_pending(&f->pending) > 0);
}

// The connect finished: answer the hello. A failure leaves the connection without a role, so
// the host may send another hello. `later`: called from the socket's event, not from the hello's
// own frame handling, so frames the host sent right behind its hello are taken up here.
static void port_connected(struct port_fwd *f, int err, bool later) {
  struct conn *c = f->conn;
  if (err == 0) {
    f->connected = true;
    log_msg(LOG_DEBUG, "connection %llu: forwarding to 127.0.0.1:%u", (unsigned long long)c->id, f->port);
    hello_reply_frame(&c->wbuf, E_OK, NULL);
    if (later) conn_process(c);  // also flushes
    return;
  }
  char *msg = xasprintf("connect to 127.0.0.1:%u in the guest: %s", f->port, strerror(err));
  hello_reply_frame(&c->wbuf, err == ECONNREFUSED ? E_NOT_FOUND : E_INTERNAL, msg);
  free(msg);
  c->fwd = NULL;
  c->role = 0;
  port_close_socket(f);
  conn_flush(c);
}

static void port_write_pending(struct port_fwd *f) {
  while (buf_pending(&f->pending)) {
    ssize_t n = send(f->h.fd, buf_head(&f->pending), buf_pending(&f->pending), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      buf_consume(&f->pending, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    log_msg(LOG_DEBUG, "forward to 127.0.0.1:%u: send: %s", f->port, strerror(errno));
    conn_close(f->conn);  // also closes the socket
    return;
  }
  if (f->host_eof && !f->shut_wr) {
    f->shut_wr = true;
    shutdown(f->h.fd, SHUT_WR);
  }
}

static void port_readable(struct port_fwd *f) {
  static uint8_t chunk[64 << 10];
  struct conn *c = f->conn;
  for (int round = 0; round < 4 && !f->sock_eof && buf_pending(&c->wbuf) < OUTPUT_HIGH_WATER; round++) {
    ssize_t n = recv(f->h.fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      frame_put(&c->wbuf, FK_DATA, chunk, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) {
      // A reset: closing the connection without an EOF tells the host to reset its side too.
      log_msg(LOG_DEBUG, "forward to 127.0.0.1:%u: recv: %s", f->port, strerror(errno));
      conn_close(c);
      return;
    }
    f->sock_eof = true;
    frame_put(&c->wbuf, FK_EOF, NULL, 0);
  }
  conn_flush(c);  // also re-evaluates what the socket waits for
}

static void on_port_event(struct handler *h, uint32_t events) {
  struct port_fwd *f = (struct port_fwd *)h;
  if (!f->connected) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    port_connected(f, err, true);
    return;
  }
  if (events & EPOLLOUT) {
    port_write_pending(f);
    if (h->dead) return;
    if (!buf_pending(&f->pending)) conn_process(f->conn);  // take the host's next frames
    if (h->dead) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (h->events & EPOLLIN) {
      port_readable(f);
    } else if ((events & (EPOLLHUP | EPOLLERR)) && !(h->events & EPOLLOUT)) {
      // Not reading (host backpressure or EOF already seen), nothing to write: nothing to do
      // until the host drains; stop listening for the hang-up meanwhile.
      watch(h, 0);
      return;
    }
  }
  port_update(f);
}

void port_open(struct conn *c, const struct hello *h) {
  if (h->port == 0 || h->port > 65535) {
    char *msg = xasprintf("port %u is not a TCP port (1-65535)", h->port);
    hello_reply_frame(&c->wbuf, E_INVALID_ARGUMENT, msg);
    free(msg);
    return;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    char *msg = xasprintf("socket for port %u: %s", h->port, strerror(errno));
    hello_reply_frame(&c->wbuf, E_INTERNAL, msg);
    free(msg);
    return;
  }
  struct port_fwd *f = xcalloc(1, sizeof *f);
  f->h.fn = on_port_event;
  f->h.fd = fd;
  f->conn = c;
  f->port = h->port;
  c->fwd = f;
  c->role = ROLE_PORT;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)h->port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  if (rc == 0) {
    port_connected(f, 0, false);
  } else if (errno == EINPROGRESS || errno == EINTR) {
    port_update(f);  // the answer waits for the connect
  } else {
    port_connected(f, errno, false);
  }
}

void port_input(struct port_fwd *f, int kind, const uint8_t *p, size_t n) {
  if (f->host_eof) {
    log_msg(LOG_INFO, "connection %llu: frame kind %d after EOF on a port connection ignored", (unsigned long long)f->conn->id, kind);
    return;
  }
  if (kind == FK_EOF) {
    f->host_eof = true;
  } else {
    buf_append(&f->pending, p, n);
  }
  port_write_pending(f);
  if (!f->h.dead) port_update(f);
}

void port_conn_gone(struct port_fwd *f) {
  f->conn = NULL;
  if (f->connected && !(f->sock_eof && f->shut_wr)) {
    // The host went away before both half-closes: the peer sees a reset, not an orderly end.
    struct linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
    setsockopt(f->h.fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
  }
  port_close_socket(f);
}
