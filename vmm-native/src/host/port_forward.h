// Host sockets for CRI port forwarding into a VM pod. containerd's PortForward dials
// 127.0.0.1:<port> inside the pod's network namespace on the host, where nothing of a VM pod
// listens; the shim redirects those connections (an iptables DNAT in that namespace) to one
// listener of its own there, learns the port each was meant for, and carries it into the guest.
#pragma once

#include <cstdint>
#include <string>

#include "../fd.h"

namespace stencil {

struct LoopbackListener {
  UniqueFd fd;
  uint16_t port = 0;
};

// A listening TCP socket on 127.0.0.1:port (0: any free port) in the network namespace at
// netns_path (empty: this thread's), non-blocking and close-on-exec.
LoopbackListener ListenOnLoopback(const std::string& netns_path, uint16_t port);

struct Ipv4Endpoint {
  std::string address;
  uint16_t port = 0;
};

// Where an accepted IPv4 connection was headed before netfilter rewrote its destination
// (SO_ORIGINAL_DST). Throws VmmError if the connection was not NATed.
Ipv4Endpoint OriginalDestination(int fd);

}  // namespace stencil
