// A spare shim daemon: Node started and the daemon's modules loaded ahead of the pod that will
// need them, waiting on a socket of its own. A new pod's `start` hands it the pod (its socket,
// containerd's options, the report pipe, the bundle's log, working directory, flags and
// environment); the daemon then reports as a spawned one does. Without one, `start` spawns the
// daemon itself. After a pod's daemon reports, `start` makes sure the next spare is coming.
//
// One spare per containerd address and shim build (it is the build's code that waits); it leaves
// when that containerd or that build is gone (shim/src/shim/spare.ts). Its lock file is held for
// its whole life, so at most one is ever loading or waiting.
#ifndef STENCIL_SPARE_H
#define STENCIL_SPARE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#define SPARE_DIR "/run/stencil/spare"
// Where the spare holds its lock (as flags tell spare.ts).
enum { SPARE_LOCK_FD = 3 };

struct spare_paths {
  char sock[PATH_MAX];
  char lock[PATH_MAX];
};

// A connection to the Unix socket at `sock` (close-on-exec; a full backlog makes connect wait at
// most 2 s), or -1. The launcher's is_listening() and the handoff both use it.
int connect_unix(const char *sock);

// Hands the pod to a waiting spare. *taken says whether one took it: if not (none waiting, or it
// did not acknowledge), nothing was given away and the caller starts a daemon itself. Once taken,
// returns the daemon's report line as spawn_daemon does (NULL with *why set when it failed).
// `args`: the daemon's flags (NULL-terminated), without the descriptor flags the spare adds.
char *handoff_to_spare(const struct spare_paths *p, const char *const *args, int listen_fd, const void *options, size_t options_len, int timeout_ms,
                       bool *taken, char **why);

// Starts the next spare unless one holds the lock: detached, confined as a daemon, at the lowest
// CPU priority while it loads (the pod starting now comes first), never waited for. Only where the
// root mount is shared (systemd's default): the spare's mount namespace is made now, and only
// propagation brings it the mounts made before its pod arrives (network namespace, volumes).
// `argv`: argv[0], the script and the spare's flags (NULL-terminated).
void ensure_spare(const struct spare_paths *p, const char *file, char *const *argv);

#endif
