// Spawns a pod's shim daemon (Node, `serve`) as `start` must: detached, in a mount namespace of
// its own, without the capabilities it never needs, serving a socket bound here.
#ifndef STENCIL_DAEMON_SPAWN_H
#define STENCIL_DAEMON_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

// The daemon's inherited descriptors (daemon.ts reads them by these numbers, given as flags).
enum { DAEMON_SOCKET_FD = 3, DAEMON_OPTIONS_FD = 4, DAEMON_REPORT_FD = 5 };

struct daemon_spawn {
  const char *file;          // the program, looked up on PATH (node)
  char *const *argv;         // its argv: argv[0] (what ps shows), the script, the daemon's flags
  int listen_fd;             // becomes DAEMON_SOCKET_FD
  const void *options;       // containerd's runtime options, written to DAEMON_OPTIONS_FD
  size_t options_len;
};

// Starts the daemon and waits for its one-line report on DAEMON_REPORT_FD ("ok ADDRESS" or
// "error MESSAGE"), at most timeout_ms. Returns the line (malloc'ed) or NULL with *why set
// (malloc'ed) when the daemon could not start, died or stayed silent (then it is killed).
char *spawn_daemon(const struct daemon_spawn *d, int timeout_ms, char **why);

// The second half of a daemon's start, whoever started it (a spawn, or a spare given the pod):
// writes containerd's options to options_fd and waits for the report on report_fd, closing both.
// Kills `pid` if it stays silent. Returns and fails as spawn_daemon does.
char *await_daemon_report(pid_t pid, int options_fd, int report_fd, const void *options, size_t options_len, int timeout_ms, char **why);

// In a child between fork and exec: a mount namespace of its own (a slave of the host's), and the
// capabilities the daemon never needs gone. A failure is written to report_fd (if >= 0) and exits.
void confine_daemon(int report_fd);

// In a child between fork and exec: the daemon's environment tuned for density (one malloc arena;
// an administrator's own MALLOC_ARENA_MAX is kept).
void tune_daemon_environment(void);

// In a child between fork and exec: `fd` at `target`, kept across the exec.
void place_fd(int fd, int target, int report_fd);

#endif
