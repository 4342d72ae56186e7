#include "tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include "../error.h"
#include "netns.h"

namespace stencil {

namespace {

// The tap's virtio header: virtio_net_hdr_v1, num_buffers included (what the guest's buffers hold).
constexpr int kVnetHeaderSize = 12;

UniqueFd OpenTapHere(const TapOptions& o, const std::string& what) {
  // TUNSETIFF on a multi-queue tap's name adds a queue to it: whether that is wanted is decided here.
  bool exists = if_nametoindex(o.name.c_str()) != 0;
  if (exists && !o.join_detached)
    throw VmmError(ErrorCode::kHostCall, what + ": an interface of that name exists already (another VM's tap?)");
  if (!exists && o.join_detached)
    throw VmmError(ErrorCode::kHostCall, what + ": no such interface to join (the VM holding it is gone)");
  UniqueFd fd(open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": open /dev/net/tun"));
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, o.name.data(), o.name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
  if (ioctl(fd.get(), TUNSETIFF, &ifr) < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": TUNSETIFF"));
  if (o.join_detached) SetTapQueueAttached(fd.get(), false);
  int header_size = kVnetHeaderSize;
  if (ioctl(fd.get(), TUNSETVNETHDRSZ, &header_size) < 0)
    throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": TUNSETVNETHDRSZ"));
  if (o.mtu == 0 && !o.up) return fd;
  // Interface ioctls go through any socket of the namespace the tap is in (this thread's).
  UniqueFd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": socket for interface ioctls"));
  if (o.mtu != 0) {
    ifreq m{};
    std::memcpy(m.ifr_name, o.name.data(), o.name.size());
    m.ifr_mtu = static_cast<int>(o.mtu);
    if (ioctl(sock.get(), SIOCSIFMTU, &m) < 0)
      throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": SIOCSIFMTU " + std::to_string(o.mtu)));
  }
  if (o.up) {
    ifreq f{};
    std::memcpy(f.ifr_name, o.name.data(), o.name.size());
    if (ioctl(sock.get(), SIOCGIFFLAGS, &f) < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": SIOCGIFFLAGS"));
    f.ifr_flags |= IFF_UP;
    if (ioctl(sock.get(), SIOCSIFFLAGS, &f) < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": SIOCSIFFLAGS up"));
  }
  return fd;
}

}  // namespace

void SetTapQueueAttached(int fd, bool attached) {
  ifreq ifr{};
  ifr.ifr_flags = attached ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
  if (ioctl(fd, TUNSETQUEUE, &ifr) < 0)
    throw VmmError(ErrorCode::kHostCall, WithErrno(std::string("TUNSETQUEUE ") + (attached ? "attach" : "detach") + " of tap fd " + std::to_string(fd)));
}

UniqueFd OpenTap(const TapOptions& o) {
  if (o.name.empty() || o.name.size() >= IFNAMSIZ || o.name.find('/') != std::string::npos)
    throw VmmError(ErrorCode::kInvalidArgument,
                   "tap interface name '" + o.name + "' must be 1 to " + std::to_string(IFNAMSIZ - 1) + " bytes without '/'");
  std::string what = "tap " + o.name + (o.netns_path.empty() ? "" : " in network namespace " + o.netns_path);
  return RunInNetns(o.netns_path, what, [&] { return OpenTapHere(o, what); });
}

}  // namespace stencil
