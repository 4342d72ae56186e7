// Tap interfaces for virtio-net backends. A pod's tap lives in the pod's network namespace (the
// one CNI set up), next to the veth it is joined to, so it is created from a short-lived thread
// that entered that namespace: the process's other threads stay where they are.
#pragma once

#include <cstdint>
#include <string>

#include "../fd.h"

namespace stencil {

struct TapOptions {
  std::string name;        // 1..15 bytes; the tap exists while a queue fd of it is open
  std::string netns_path;  // empty: the calling thread's namespace; else e.g. /var/run/netns/cni-...
  uint32_t mtu = 0;        // 0: the kernel's default
  bool up = true;          // bring the interface up
  // false: create the tap (an interface of that name must not exist). true: open one more queue
  // of an existing tap, detached (it receives nothing until SetTapQueueAttached): how the VM of a
  // pod migrating to another process on the same host takes the pod's tap over without a gap.
  bool join_detached = false;
};

// Opens /dev/net/tun as a non-persistent multi-queue tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, the
// 12-byte virtio_net_hdr_v1, IFF_MULTI_QUEUE), non-blocking and close-on-exec: one queue. Throws
// VmmError naming the interface, the namespace and the failed call with its errno.
UniqueFd OpenTap(const TapOptions& options);

// Attaches (the kernel delivers frames to it) or detaches a queue of a multi-queue tap.
void SetTapQueueAttached(int fd, bool attached);

}  // namespace stencil
