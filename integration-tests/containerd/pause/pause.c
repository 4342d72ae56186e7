// The sandbox ("pause") process of the CRI tests' pod image: it holds the pod's namespaces open
// and does nothing else. It sleeps (pause(2)'s race-free form, sigsuspend(2), so a SIGTERM that
// arrives between the check and the sleep is not lost); SIGINT or SIGTERM end it with status 0,
// and as the pod's PID 1 (shared PID namespace) it reaps every orphan handed to it on SIGCHLD.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void on_child(int sig) {
  (void)sig;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int handle(int sig, void (*fn)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = sig == SIGCHLD ? SA_NOCLDSTOP | SA_RESTART : 0;
  if (sigaction(sig, &sa, NULL) != 0) {
    fprintf(stderr, "pause: sigaction(%d): %s\n", sig, strerror(errno));
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  (void)argv;
  if (argc > 1) {
    fprintf(stderr, "pause: takes no arguments\n");
    return 2;
  }
  if (handle(SIGINT, on_stop) || handle(SIGTERM, on_stop) || handle(SIGCHLD, on_child)) return 1;
  sigset_t stops, before;
  sigemptyset(&stops);
  sigaddset(&stops, SIGINT);
  sigaddset(&stops, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &stops, &before) != 0) {
    fprintf(stderr, "pause: sigprocmask: %s\n", strerror(errno));
    return 1;
  }
  while (!stop_requested) sigsuspend(&before);
  return 0;
}
