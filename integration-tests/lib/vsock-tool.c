// vsock-tool: the guest side of integration-tests/vm/vsock.test.ts (busybox has no vsock tool).
// Built statically by the test and added to the guest's initramfs as /vsock-tool.
//
//   vsock-tool listen PORT                     echo server (a process per connection), forever
//   vsock-tool wait PORT                       accept one connection, then exit 0
//   vsock-tool echo-client CID PORT SIZE SEED  send SIZE pattern bytes, half-close, expect them back
//   vsock-tool parallel N CID PORT SIZE        N echo-clients at once
//   vsock-tool connect-expect-fail CID PORT    report how a connect to a dead port fails
//
// Results are single lines on stdout ("echo-client PORT ok SIZE", ...); failures say why.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static unsigned long arg(const char* s) { return strtoul(s, NULL, 10); }

static uint8_t pattern(size_t i, unsigned seed) { return (uint8_t)(i * 31 + (i >> 9) * 7 + seed * 101); }

static int vsock_socket(void) {
  int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (fd < 0) {
    printf("socket(AF_VSOCK) failed: %s\n", strerror(errno));
    exit(1);
  }
  return fd;
}

static int do_connect(unsigned cid, unsigned port) {
  int fd = vsock_socket();
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
  if (connect(fd, (struct sockaddr*)&addr, sizeof addr) < 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

static int do_listen(unsigned port) {
  int fd = vsock_socket();
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(fd, (struct sockaddr*)&addr, sizeof addr) < 0 || listen(fd, 64) < 0) {
    printf("listen on port %u failed: %s\n", port, strerror(errno));
    exit(1);
  }
  return fd;
}

static void echo(int fd) {
  static char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(fd, buf + off, (size_t)(n - off));
      if (w <= 0) return;
      off += w;
    }
  }
  shutdown(fd, SHUT_WR);
}

static int echo_client(unsigned cid, unsigned port, size_t size, unsigned seed) {
  int fd = do_connect(cid, port);
  if (fd < 0) {
    printf("echo-client %u connect failed: %s\n", port, strerror(errno));
    return 1;
  }
  uint8_t* out = malloc(size + 1);
  uint8_t* in = malloc(size + 1);
  for (size_t i = 0; i < size; i++) out[i] = pattern(i, seed);
  size_t sent = 0, got = 0;
  int write_open = 1;
  while (got < size + 1) {  // read until EOF: one byte more than expected must not arrive
    if (write_open && sent == size) {
      shutdown(fd, SHUT_WR);
      write_open = 0;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN | (write_open ? POLLOUT : 0)};
    if (poll(&p, 1, 60000) <= 0) {
      printf("echo-client %u stalled: sent %zu, got %zu of %zu\n", port, sent, got, size);
      return 1;
    }
    if (p.revents & POLLOUT) {
      size_t chunk = size - sent < 16384 ? size - sent : 16384;
      ssize_t w = send(fd, out + sent, chunk, MSG_DONTWAIT);
      if (w > 0) sent += (size_t)w;
      else if (w < 0 && errno != EAGAIN) {
        printf("echo-client %u write failed: %s\n", port, strerror(errno));
        return 1;
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(fd, in + got, size + 1 - got, MSG_DONTWAIT);
      if (n == 0) break;
      if (n < 0 && errno != EAGAIN) {
        printf("echo-client %u read failed: %s\n", port, strerror(errno));
        return 1;
      }
      if (n > 0) got += (size_t)n;
    }
  }
  close(fd);
  if (got != size || memcmp(in, out, size) != 0) {
    size_t i = 0;
    while (i < got && i < size && in[i] == out[i]) i++;
    printf("echo-client %u MISMATCH: got %zu of %zu bytes, first difference at %zu\n", port, got, size, i);
    return 1;
  }
  printf("echo-client %u ok %zu\n", port, size);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGCHLD, SIG_DFL);
  if (argc >= 3 && !strcmp(argv[1], "listen")) {
    signal(SIGCHLD, SIG_IGN);  // reap the per-connection children automatically
    int lfd = do_listen((unsigned)arg(argv[2]));
    for (;;) {
      int fd = accept(lfd, NULL, NULL);
      if (fd < 0) continue;
      if (fork() == 0) {
        close(lfd);
        echo(fd);
        _exit(0);
      }
      close(fd);
    }
  }
  if (argc >= 3 && !strcmp(argv[1], "wait")) {
    int lfd = do_listen((unsigned)arg(argv[2]));
    int fd = accept(lfd, NULL, NULL);
    close(fd);
    return fd < 0;
  }
  alarm(300);  // a hang must end the guest script, not the test's patience
  if (argc >= 6 && !strcmp(argv[1], "echo-client"))
    return echo_client((unsigned)arg(argv[2]), (unsigned)arg(argv[3]), arg(argv[4]), (unsigned)arg(argv[5]));
  if (argc >= 6 && !strcmp(argv[1], "parallel")) {
    int n = (int)arg(argv[2]), failed = 0;
    for (int i = 0; i < n; i++)
      if (fork() == 0) _exit(echo_client((unsigned)arg(argv[3]), (unsigned)arg(argv[4]), arg(argv[5]), (unsigned)i + 10));
    for (int i = 0; i < n; i++) {
      int status;
      if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
    }
    printf("parallel %s %d of %d\n", failed ? "FAILED" : "ok", n - failed, n);
    return failed != 0;
  }
  if (argc >= 4 && !strcmp(argv[1], "connect-expect-fail")) {
    unsigned port = (unsigned)arg(argv[3]);
    int fd = do_connect((unsigned)arg(argv[2]), port);
    if (fd >= 0) {
      printf("connect %u unexpectedly succeeded\n", port);
      return 1;
    }
    printf("connect %u refused: %s\n", port, strerror(errno));
    return 0;
  }
  fprintf(stderr, "usage: see the comment at the top of vsock-tool.c\n");
  return 2;
}
