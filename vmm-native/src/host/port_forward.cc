#include "port_forward.h"

#include <arpa/inet.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "../error.h"
#include "netns.h"

namespace stencil {

LoopbackListener ListenOnLoopback(const std::string& netns_path, uint16_t port) {
  std::string what = "listener on 127.0.0.1:" + std::to_string(port) + (netns_path.empty() ? "" : " in network namespace " + netns_path);
  return RunInNetns(netns_path, what, [&] {
    LoopbackListener l;
    l.fd = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!l.fd.valid()) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": socket"));
    int on = 1;
    setsockopt(l.fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l.fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": bind"));
    if (listen(l.fd.get(), SOMAXCONN) < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": listen"));
    socklen_t len = sizeof sa;
    if (getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&sa), &len) < 0)
      throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": getsockname"));
    l.port = ntohs(sa.sin_port);
    return l;
  });
}

Ipv4Endpoint OriginalDestination(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) < 0)
    throw VmmError(ErrorCode::kHostCall, WithErrno("SO_ORIGINAL_DST of socket " + std::to_string(fd) + " (was the connection redirected?)"));
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &sa.sin_addr, text, sizeof text);
  return Ipv4Endpoint{text, ntohs(sa.sin_port)};
}

}  // namespace stencil
