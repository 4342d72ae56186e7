// The receiving side of a spare shim daemon's handoff (shim/launcher/spare.c sends it).
//
// A spare is a pod daemon whose Node start and module loading are already done, waiting for a
// pod: `start` connects to its socket and passes the pod's listening socket, containerd's
// runtime-options pipe, the report pipe and the bundle's log FIFO as SCM_RIGHTS, with the
// daemon's working directory, flags and environment as NUL-terminated strings:
//   u32 length (little-endian) | `length` bytes of NUL-terminated strings
// The descriptors travel with the first bytes. The spare answers one byte, 'k', once it holds
// them all; a launcher that gets no answer still holds its own copies and starts a daemon itself.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "../fd.h"

namespace stencil {

// The most descriptors and bytes a handoff may carry; more is refused.
constexpr size_t kHandoffMaxFds = 8;
constexpr size_t kHandoffMaxBytes = 1 << 20;

struct Handoff {
  std::vector<UniqueFd> fds;
  std::vector<std::string> strings;
  int peer_pid = 0;
};

// A listening socket at `path` (0600), replacing a stale file there; close-on-exec.
UniqueFd ListenForHandoff(const std::string& path);

// Waits up to timeout_ms for one launcher, takes its handoff and acknowledges it. nullopt on
// timeout; a VmmError naming what was wrong with a malformed or cut-off handoff (whose
// descriptors are then closed, so the launcher sees no answer).
std::optional<Handoff> AcceptHandoff(int listen_fd, int timeout_ms);

// Decodes a handoff body: the NUL-terminated strings in `body` (the last one terminated too).
std::vector<std::string> SplitHandoffStrings(const std::string& body);

}  // namespace stencil
