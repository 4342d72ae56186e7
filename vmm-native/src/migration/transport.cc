#include "transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "../error.h"
#include "../host/unix_socket.h"

namespace stencil {

namespace {

VmmError Invalid(const std::string& uri, const std::string& why) {
  return VmmError(ErrorCode::kInvalidArgument, "migration URI '" + uri + "': " + why +
                                                   " (expected tcp:HOST:PORT or unix:PATH)");
}

void SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
    throw VmmError(ErrorCode::kMigration, WithErrno("making a migration socket non-blocking"));
}

// Resolved addresses of a tcp endpoint (numeric hosts and names from /etc/hosts alike).
struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() {
    if (list) freeaddrinfo(list);
  }
};

void Resolve(const MigrationEndpoint& e, bool passive, AddrInfo* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  std::string port = std::to_string(e.port);
  int rc = getaddrinfo(e.host.empty() ? nullptr : e.host.c_str(), port.c_str(), &hints, &out->list);
  if (rc != 0 || !out->list)
    throw VmmError(ErrorCode::kMigration, "cannot resolve migration host '" + e.host + "': " + gai_strerror(rc));
}

sockaddr_un UnixAddress(const MigrationEndpoint& e) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, e.path.data(), e.path.size());
  return addr;
}

std::string PeerName(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* in = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
    port = ntohs(in->sin6_port);
  } else {
    return "unix socket peer";
  }
  return std::string(host) + ":" + std::to_string(port);
}

}  // namespace

std::string MigrationEndpoint::Describe() const {
  return kind == Kind::kUnix ? "unix:" + path : "tcp:" + host + ":" + std::to_string(port);
}

MigrationEndpoint ParseMigrationEndpoint(const std::string& uri) {
  MigrationEndpoint e;
  if (uri.rfind("unix:", 0) == 0) {
    e.kind = MigrationEndpoint::Kind::kUnix;
    e.path = uri.substr(5);
    if (e.path.empty()) throw Invalid(uri, "no socket path");
    if (e.path.size() >= sizeof(sockaddr_un{}.sun_path))
      throw Invalid(uri, "the socket path is longer than " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
    if (e.path.find('\0') != std::string::npos) throw Invalid(uri, "the socket path contains a NUL byte");
    return e;
  }
  if (uri.rfind("tcp:", 0) != 0) throw Invalid(uri, "unknown transport");
  std::string rest = uri.substr(4);
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos) throw Invalid(uri, "no port");
  e.host = rest.substr(0, colon);
  if (e.host.size() >= 2 && e.host.front() == '[' && e.host.back() == ']') e.host = e.host.substr(1, e.host.size() - 2);
  std::string port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535)
    throw Invalid(uri, "port '" + port + "' is not a number in 0..65535");
  e.port = static_cast<uint16_t>(std::stoul(port));
  return e;
}

Cancellation::Cancellation() : event_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!event_.valid()) throw VmmError(ErrorCode::kMigration, WithErrno("creating a cancellation eventfd"));
}

void Cancellation::Cancel() {
  cancelled_ = true;
  uint64_t one = 1;
  ssize_t ignored = write(event_.get(), &one, sizeof one);
  (void)ignored;
}

void Cancellation::ThrowIfCancelled() const {
  if (cancelled_) throw VmmError(ErrorCode::kCancelled, "migration cancelled");
}

MigrationChannel::MigrationChannel(UniqueFd socket, const Cancellation& cancel, std::string peer)
    : socket_(std::move(socket)), cancel_(cancel), peer_(std::move(peer)) {
  SetNonBlocking(socket_.get());
}

void MigrationChannel::SetBandwidthLimit(uint64_t bytes_per_second) {
  limit_ = bytes_per_second;
  paced_bytes_ = 0;
  paced_since_ = std::chrono::steady_clock::now();
}

void MigrationChannel::Wait(short events, const char* what, std::chrono::milliseconds timeout) {
  pollfd fds[2] = {{socket_.get(), events, 0}, {cancel_.fd(), POLLIN, 0}};
  for (;;) {
    cancel_.ThrowIfCancelled();
    int n = poll(fds, 2, static_cast<int>(timeout.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw VmmError(ErrorCode::kMigration, WithErrno(std::string("waiting to ") + what));
    cancel_.ThrowIfCancelled();
    if (n == 0)
      throw VmmError(ErrorCode::kMigration, std::string("timed out after ") + std::to_string(timeout.count()) +
                                                " ms waiting to " + what + " (" + peer_ + ")");
    if (fds[0].revents) return;
  }
}

void MigrationChannel::Pace(size_t len) {
  if (!limit_) return;
  paced_bytes_ += len;
  auto due = paced_since_ + std::chrono::microseconds(paced_bytes_ * 1000000 / limit_);
  auto now = std::chrono::steady_clock::now();
  if (due <= now) return;
  // Sleep in poll on the cancellation, so migrate_cancel is never held up by the cap.
  pollfd fd{cancel_.fd(), POLLIN, 0};
  int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(due - now).count()) + 1;
  poll(&fd, 1, ms);
  cancel_.ThrowIfCancelled();
}

void MigrationChannel::Write(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len) {
    // Paced in slices, so a capped link sends evenly instead of in bursts a round long.
    size_t slice = limit_ ? std::min<size_t>(len, 64 * 1024) : len;
    ssize_t n = send(socket_.get(), p, slice, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      Wait(POLLOUT, "send to the migration destination", std::chrono::minutes(10));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw VmmError(ErrorCode::kMigration, WithErrno("sending the migration stream to " + peer_));
    p += n, len -= static_cast<size_t>(n), written_ += static_cast<uint64_t>(n);
    Pace(static_cast<size_t>(n));
  }
}

void MigrationChannel::Read(void* out, size_t len, const char* what) {
  auto* p = static_cast<uint8_t*>(out);
  // Small reads (a record's fields) come from a buffer filled a socket read at a time; a big one
  // (a run of pages) goes straight to its place once the buffer is empty.
  size_t buffered = std::min(len, read_end_ - read_pos_);
  if (buffered) {
    std::memcpy(p, read_buffer_.data() + read_pos_, buffered);
    read_pos_ += buffered, p += buffered, len -= buffered, read_ += buffered;
  }
  while (len) {
    const bool direct = len >= kReadBufferBytes;
    if (!direct && read_buffer_.empty()) read_buffer_.resize(kReadBufferBytes);
    ssize_t n = direct ? recv(socket_.get(), p, len, 0) : recv(socket_.get(), read_buffer_.data(), kReadBufferBytes, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      Wait(POLLIN, (std::string("read ") + what).c_str(), read_timeout_);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw VmmError(ErrorCode::kMigration, WithErrno(std::string("reading ") + what + " from " + peer_));
    if (n == 0)
      throw VmmError(ErrorCode::kMigration, std::string("the stream ended while reading ") + what + " (after " +
                                                std::to_string(read_) + " bytes): " + peer_ + " closed the connection");
    size_t used = static_cast<size_t>(n);
    if (!direct) {
      used = std::min(len, used);
      std::memcpy(p, read_buffer_.data(), used);
      read_pos_ = used, read_end_ = static_cast<size_t>(n);
    }
    p += used, len -= used, read_ += used;
  }
}

void MigrationChannel::ShutdownWrite() { shutdown(socket_.get(), SHUT_WR); }

UniqueFd ConnectMigration(const MigrationEndpoint& e, const Cancellation& cancel, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_error;
  for (;;) {
    cancel.ThrowIfCancelled();
    AddrInfo resolved;
    if (e.kind == MigrationEndpoint::Kind::kTcp) Resolve(e, false, &resolved);
    int family = e.kind == MigrationEndpoint::Kind::kUnix ? AF_UNIX : resolved.list->ai_family;
    UniqueFd fd(socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) throw VmmError(ErrorCode::kMigration, WithErrno("creating a socket for " + e.Describe()));
    int rc;
    if (e.kind == MigrationEndpoint::Kind::kUnix) {
      sockaddr_un addr = UnixAddress(e);
      rc = connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    } else {
      int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      rc = connect(fd.get(), resolved.list->ai_addr, resolved.list->ai_addrlen);
    }
    if (rc < 0 && errno == EINPROGRESS) {
      pollfd fds[2] = {{fd.get(), POLLOUT, 0}, {cancel.fd(), POLLIN, 0}};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      int n = poll(fds, 2, static_cast<int>(std::max<int64_t>(left.count(), 0)));
      cancel.ThrowIfCancelled();
      int err = 0;
      socklen_t len = sizeof err;
      if (n <= 0) err = ETIMEDOUT;
      else getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err ? -1 : 0;
      errno = err;
    }
    if (rc == 0) return fd;
    last_error = std::strerror(errno);
    bool retry = errno == ECONNREFUSED || errno == ENOENT || errno == EAGAIN;
    if (!retry || std::chrono::steady_clock::now() >= deadline)
      throw VmmError(ErrorCode::kMigration, "cannot connect to the migration destination " + e.Describe() + ": " + last_error);
    pollfd wait{cancel.fd(), POLLIN, 0};
    poll(&wait, 1, 50);
  }
}

MigrationListener::MigrationListener(const MigrationEndpoint& e) : endpoint_(e) {
  if (e.kind == MigrationEndpoint::Kind::kUnix) {
    socket_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!socket_.valid()) throw VmmError(ErrorCode::kMigration, WithErrno("creating a socket for " + e.Describe()));
    sockaddr_un addr = UnixAddress(e);
    if (int err = BindOwnerOnly(socket_.get(), addr))
      throw VmmError(ErrorCode::kMigration, WithErrno("listening for the incoming migration on " + e.Describe(), err));
  } else {
    AddrInfo resolved;
    Resolve(e, true, &resolved);
    socket_.reset(socket(resolved.list->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!socket_.valid()) throw VmmError(ErrorCode::kMigration, WithErrno("creating a socket for " + e.Describe()));
    int one = 1;
    setsockopt(socket_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(socket_.get(), resolved.list->ai_addr, resolved.list->ai_addrlen) < 0)
      throw VmmError(ErrorCode::kMigration, WithErrno("listening for the incoming migration on " + e.Describe()));
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    getsockname(socket_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    endpoint_.port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                       : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  if (listen(socket_.get(), 1) < 0) {
    int err = errno;
    if (e.kind == MigrationEndpoint::Kind::kUnix) unlink(e.path.c_str());
    throw VmmError(ErrorCode::kMigration, WithErrno("listening for the incoming migration on " + e.Describe(), err));
  }
}

MigrationListener::~MigrationListener() {
  if (endpoint_.kind == MigrationEndpoint::Kind::kUnix && socket_.valid()) unlink(endpoint_.path.c_str());
}

UniqueFd MigrationListener::Accept(const Cancellation& cancel, std::string* peer) {
  for (;;) {
    pollfd fds[2] = {{socket_.get(), POLLIN, 0}, {cancel.fd(), POLLIN, 0}};
    cancel.ThrowIfCancelled();
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    cancel.ThrowIfCancelled();
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(socket_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0 && (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)) continue;
    if (fd < 0) throw VmmError(ErrorCode::kMigration, WithErrno("accepting the incoming migration on " + endpoint_.Describe()));
    if (peer) *peer = PeerName(ss);
    return UniqueFd(fd);
  }
}

}  // namespace stencil
