// What a VM is built from: vCPUs, memory, kernel, devices. Shared by the boot path, the
// snapshot's config and the restore path.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "memory.h"
#include "virtio/blk.h"
#include "virtio/net.h"

namespace stencil {

// A host directory shared with the guest over virtio-9p (9P2000.L).
struct SharedDirectory {
  std::string tag;        // the mount source in the guest: [A-Za-z0-9_.-], at most 64 bytes, unique
  std::string host_path;  // absolute path of an existing directory
  bool read_only = false;
};

// virtio-vsock in hybrid mode (see virtio/vsock/muxer.h): the host side is Unix sockets.
struct VsockConfig {
  uint32_t guest_cid = 0;  // 0: no vsock device; otherwise 3..4294967294
  std::string uds_path;    // host-initiated: CONNECT <port> on this socket; guest-initiated: <uds_path>_<port>
};

// virtio-net: one interface. The backend fd (a tap, host/tap.h) is the caller's: the VM takes a
// duplicate, so the caller closes its own. No backend (-1) is a NIC on no wire (a template's).
struct NetworkConfig {
  bool enabled = false;
  VirtioNet::Mac mac{};
  int backend_fd = -1;  // never saved: a restore gets its own
};

struct VmConfig {
  uint32_t vcpus = 1;
  MemoryOptions memory;
  std::string kernel_path;
  std::string initrd_path;  // optional
  std::string cmdline;      // device declarations are appended by the VMM
  bool virtio_rng = true;
  std::vector<BlockDeviceConfig> disks;  // guest sees them as /dev/vda, /dev/vdb, ... in order
  std::vector<SharedDirectory> shares;   // virtio-9p: mount -t 9p -o trans=virtio <tag> <dir>
  VsockConfig vsock;                     // optional: guest_cid 0 leaves it out
  NetworkConfig net;                     // optional: enabled=false leaves it out
};

}  // namespace stencil
