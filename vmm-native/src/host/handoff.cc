#include "handoff.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "../error.h"
#include "unix_socket.h"

namespace stencil {
namespace {

VmmError HandoffError(const std::string& what) { return VmmError(ErrorCode::kHostCall, "spare daemon handoff: " + what); }

VmmError SystemError(const std::string& what) { return HandoffError(what + ": " + std::strerror(errno)); }

// Reads exactly n bytes (the connection has a receive timeout), collecting any descriptors.
void ReceiveExactly(int conn, char* buf, size_t n, std::vector<UniqueFd>* fds) {
  size_t got = 0;
  while (got < n) {
    iovec iov{buf + got, n - got};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kHandoffMaxFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t r = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw SystemError(errno == EAGAIN ? "the launcher went silent" : "receiving");
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds->emplace_back(fd);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) throw HandoffError("more than " + std::to_string(kHandoffMaxFds) + " descriptors");
    if (r == 0) throw HandoffError("the launcher closed the connection after " + std::to_string(got) + " of " + std::to_string(n) + " bytes");
    got += static_cast<size_t>(r);
  }
}

}  // namespace

UniqueFd ListenForHandoff(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) throw HandoffError("socket path '" + path + "' is empty or too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw SystemError("socket");
  unlink(path.c_str());  // stale: the caller holds the spare's lock, so no live spare serves it
  if (int err = BindOwnerOnly(fd.get(), addr)) {
    errno = err;
    throw SystemError("binding " + path);
  }
  if (listen(fd.get(), 8) < 0) throw SystemError("listening on " + path);
  return fd;
}

std::vector<std::string> SplitHandoffStrings(const std::string& body) {
  std::vector<std::string> out;
  if (body.empty()) return out;
  if (body.back() != '\0') throw HandoffError("its last string is not NUL-terminated");
  size_t start = 0;
  while (start < body.size()) {
    size_t end = body.find('\0', start);
    out.push_back(body.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::optional<Handoff> AcceptHandoff(int listen_fd, int timeout_ms) {
  pollfd p{listen_fd, POLLIN, 0};
  int ready;
  do ready = poll(&p, 1, timeout_ms);
  while (ready < 0 && errno == EINTR);
  if (ready < 0) throw SystemError("waiting for a launcher");
  if (ready == 0) return std::nullopt;
  UniqueFd conn(accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn.valid()) throw SystemError("accepting a launcher");
  timeval timeout{5, 0};  // a launcher sends everything at once
  setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  Handoff h;
  ucred peer{};
  socklen_t peer_len = sizeof peer;
  if (getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) == 0) h.peer_pid = peer.pid;
  unsigned char header[4];
  ReceiveExactly(conn.get(), reinterpret_cast<char*>(header), sizeof header, &h.fds);
  uint32_t length = header[0] | header[1] << 8 | header[2] << 16 | static_cast<uint32_t>(header[3]) << 24;
  if (length == 0 || length > kHandoffMaxBytes)
    throw HandoffError("a body of " + std::to_string(length) + " bytes (1 to " + std::to_string(kHandoffMaxBytes) + " allowed)");
  std::string body(length, '\0');
  ReceiveExactly(conn.get(), body.data(), length, &h.fds);
  h.strings = SplitHandoffStrings(body);
  char ack = 'k';
  if (send(conn.get(), &ack, 1, MSG_NOSIGNAL) != 1) throw SystemError("acknowledging");
  return h;
}

}  // namespace stencil
