#include "muxer.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "../../error.h"

namespace stencil::vsock {

namespace {

constexpr size_t kMaxConnectLine = 32;
constexpr size_t kMaxOrphanRsts = 256;
constexpr auto kConnectRetry = std::chrono::milliseconds(20);

bool SetUnixPath(sockaddr_un& addr, const std::string& path) {
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}

}  // namespace

std::optional<uint32_t> ParseConnectLine(const std::string& raw) {
  std::string line = raw;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  static const std::string kPrefix = "CONNECT ";
  if (line.compare(0, kPrefix.size(), kPrefix) != 0) return std::nullopt;
  std::string digits = line.substr(kPrefix.size());
  if (digits.empty() || digits.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > 0xffffffffULL) return std::nullopt;
  return static_cast<uint32_t>(v);
}

Muxer::Muxer(EventLoop& loop, uint64_t guest_cid, MuxerOptions options, int listen_fd, std::function<void()> rx_work)
    : loop_(loop), guest_cid_(guest_cid), options_(std::move(options)), listen_fd_(listen_fd),
      rx_work_(std::move(rx_work)), scratch_(kMaxPayload) {
  if (listen_fd_ >= 0) loop_.Add(listen_fd_, EPOLLIN, [this](uint32_t) { OnListenerReadable(); });
}

Muxer::~Muxer() {
  if (listen_fd_ >= 0) loop_.Remove(listen_fd_);
  while (!pending_.empty()) ClosePending(pending_.begin()->first);
  DropAllConnections();
}

void Muxer::DropAllConnections() {
  while (!conns_.empty()) Remove(conns_.begin());
  ready_.clear();
  orphan_rsts_.clear();
}

// ---------------------------------------------------------------------------------------------
// Guest -> host

void Muxer::QueueOrphanRst(const Header& reply) {
  if (orphan_rsts_.size() >= kMaxOrphanRsts) return;  // the guest's connect simply times out
  orphan_rsts_.push_back(reply);
  rx_work_();
}

void Muxer::ReplyRst(const Header& h) { QueueOrphanRst(ReplyTo(h, kOpRst)); }

void Muxer::OnGuestPacket(const Header& h, const uint8_t* payload) {
  Key key{h.dst_port, h.src_port};
  auto it = conns_.find(key);
  if (h.op == kOpRequest) {
    if (it != conns_.end()) {
      // The guest reuses a flow we still track: it lost track of it (or is confused). Either
      // way the old flow is dead; the RST queued for it answers this REQUEST too.
      bool live = it->second->conn.state() != Connection::State::kClosed;
      if (live) Log("REQUEST for live flow " + Describe(h) + ": resetting it");
      it->second->conn.Reset("guest sent REQUEST on a live flow");  // queues the RST that answers it
      Update(key);
      if (!live) ReplyRst(h);
      return;
    }
    if (conns_.size() >= options_.max_connections) {
      Log("too many connections (" + std::to_string(conns_.size()) + "): refusing " + Describe(h));
      ReplyRst(h);
      return;
    }
    StartGuestConnection(h);
    return;
  }
  if (it == conns_.end()) {
    if (h.op != kOpRst) ReplyRst(h);  // unknown flow
    return;
  }
  Entry& e = *it->second;
  Connection::State before = e.conn.state();
  e.conn.OnGuestPacket(h, payload);
  if (before == Connection::State::kGuestConnecting && e.conn.state() == Connection::State::kEstablished)
    e.prefix = "OK " + std::to_string(e.conn.local_port()) + "\n";
  if (e.conn.state() == Connection::State::kClosed && before != Connection::State::kClosed &&
      e.conn.reset_reason().rfind("guest protocol violation", 0) == 0)
    Log("port " + std::to_string(h.dst_port) + "<-" + std::to_string(h.src_port) + ": " + e.conn.reset_reason() +
        " (" + Describe(h) + ")");
  Update(key);
}

void Muxer::StartGuestConnection(const Header& request) {
  Key key{request.dst_port, request.src_port};
  auto e = std::make_unique<Entry>(Connection::FromGuestRequest(guest_cid_, request, options_.buf_alloc));
  e->fd.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!e->fd.valid()) {
    Log(WithErrno("socket(AF_UNIX)"));
    ReplyRst(request);
    return;
  }
  conns_.emplace(key, std::move(e));
  // The deadline for the whole connect, retries included, is the timer armed here.
  Entry& entry = *conns_[key];
  entry.timer_state = Connection::State::kHostConnecting;  // this timer is that state's deadline
  entry.timer = loop_.AddTimer(options_.connect_timeout, [this, key] {
    auto it = conns_.find(key);
    if (it == conns_.end()) return;
    it->second->timer = 0;
    it->second->conn.Reset("connecting to " + options_.uds_path + "_" + std::to_string(key.local_port) + " timed out");
    Update(key);
  });
  TryHostConnect(key);
}

void Muxer::TryHostConnect(const Key& key) {
  auto it = conns_.find(key);
  if (it == conns_.end() || it->second->conn.state() != Connection::State::kHostConnecting) return;
  Entry& e = *it->second;
  std::string path = options_.uds_path + "_" + std::to_string(key.local_port);
  sockaddr_un addr;
  if (!SetUnixPath(addr, path)) {
    e.conn.Reset("socket path " + path + " is too long");
  } else if (connect(e.fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno == EISCONN) {
    e.conn.OnHostConnected();
  } else if (errno == EAGAIN || errno == EINPROGRESS || errno == EALREADY || errno == EINTR) {
    // A full listen backlog: try again shortly (the connect timer bounds the retries).
    loop_.AddTimer(kConnectRetry, [this, key] { TryHostConnect(key); });
    return;
  } else {
    // Nobody listens: an expected outcome, so it is not logged.
    e.conn.Reset(WithErrno("connect to " + path));
  }
  Update(key);
}

// ---------------------------------------------------------------------------------------------
// Host socket events and reconciliation

void Muxer::OnHostEvent(const Key& key, uint32_t events) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  Entry& e = *it->second;
  if (events & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(e.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    e.conn.Reset(WithErrno("host socket error", err ? err : EIO));
    e.hup = true;
  } else {
    if (events & EPOLLIN) e.readable = true;
    if (events & EPOLLOUT) e.write_blocked = false;
    if (events & EPOLLHUP) {
      // Both directions are shut: whatever is left can still be read, writes will fail. HUP is
      // reported level-triggered whatever we ask for, so stop watching the fd.
      e.hup = true;
      e.readable = true;
      e.write_blocked = false;
      if (e.conn.state() == Connection::State::kGuestConnecting) e.conn.Reset("host client went away");
    }
  }
  Update(key);
}

void Muxer::Flush(Entry& e) {
  while (!e.prefix.empty() && !e.write_blocked) {
    ssize_t n = send(e.fd.get(), e.prefix.data(), e.prefix.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      e.prefix.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      e.write_blocked = errno == EAGAIN;
    } else {
      e.conn.Reset(WithErrno("writing to the host socket"));
      e.prefix.clear();
      return;
    }
  }
  while (e.prefix.empty() && e.conn.host_bound_size() > 0 && !e.write_blocked) {
    ssize_t n = send(e.fd.get(), e.conn.host_bound_data(), e.conn.host_bound_size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      e.conn.ConsumeHostBound(static_cast<uint32_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      e.write_blocked = errno == EAGAIN;
    } else if (e.conn.state() == Connection::State::kClosed) {
      e.conn.DropHostBound();  // draining after the guest closed: the reader is gone too
    } else {
      e.conn.Reset(WithErrno("writing to the host socket"));
      return;
    }
  }
  if (e.prefix.empty() && e.conn.ShouldShutdownHostWrite() && e.conn.state() != Connection::State::kClosed) {
    shutdown(e.fd.get(), SHUT_WR);
    e.conn.OnHostWriteShutdown();
  }
}

void Muxer::MarkReady(Entry& e) {
  if (e.in_ready) return;
  e.in_ready = true;
  ready_.push_back(e.key());
  rx_work_();
}

void Muxer::Update(const Key& key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  Entry& e = *it->second;
  Connection::State st = e.conn.state();
  if (st != Connection::State::kHostConnecting && e.fd.valid()) Flush(e);
  st = e.conn.state();
  if (e.conn.Done()) {
    if (e.in_ready) return;  // Remove after the ready list has let go of it (see FillRx)
    Remove(it);
    return;
  }

  // Timers: one deadline per state that waits on someone else (the kHostConnecting deadline is
  // armed by StartGuestConnection).
  if (e.timer_state != st) {
    if (e.timer) loop_.CancelTimer(e.timer), e.timer = 0;
    e.timer_state = st;
    std::chrono::milliseconds delay{0};
    const char* what = nullptr;
    if (st == Connection::State::kGuestConnecting) delay = options_.connect_timeout, what = "the guest did not answer REQUEST";
    if (st == Connection::State::kClosing) delay = options_.close_timeout, what = "the guest did not answer SHUTDOWN with RST";
    if (st == Connection::State::kClosed) delay = options_.drain_timeout, what = "the host reader did not take the data";
    if (what) {
      e.timer = loop_.AddTimer(delay, [this, key, what] {
        auto t = conns_.find(key);
        if (t == conns_.end()) return;
        t->second->timer = 0;
        if (t->second->conn.state() == Connection::State::kClosed) t->second->conn.DropHostBound();
        else t->second->conn.Reset(what);
        Update(key);
      });
    }
  }

  // Epoll interest: read only with credit (backpressure), write only when blocked. A socket
  // that hung up or failed is not watched (HUP/ERR are level-triggered whatever we ask for), and
  // one with nothing left to deliver is closed at once.
  bool finished = st == Connection::State::kClosed && e.conn.host_bound_size() == 0;
  if (!e.fd.valid() || st == Connection::State::kHostConnecting || e.hup || finished) {
    if (e.registered) loop_.Remove(e.fd.get()), e.registered = false;
    if (finished) e.fd.reset();
  } else {
    uint32_t events = 0;
    if (e.conn.WantsHostRead() && !e.readable) events |= EPOLLIN;
    if (e.write_blocked && (!e.prefix.empty() || e.conn.host_bound_size() > 0)) events |= EPOLLOUT;
    if (!e.registered) {
      loop_.Add(e.fd.get(), events, [this, key](uint32_t ev) { OnHostEvent(key, ev); });
      e.registered = true;
    } else if (events != e.events) {
      loop_.Modify(e.fd.get(), events);
    }
    e.events = events;
  }

  if (e.conn.HasControl() || (e.conn.WantsHostRead() && e.readable)) MarkReady(e);
}

void Muxer::Remove(std::map<Key, std::unique_ptr<Entry>>::iterator it) {
  Entry& e = *it->second;
  if (e.timer) loop_.CancelTimer(e.timer);
  if (e.registered) loop_.Remove(e.fd.get());
  conns_.erase(it);  // closes the host socket; a stale ready_ key is skipped by FillRx
}

// ---------------------------------------------------------------------------------------------
// Device -> guest

uint32_t Muxer::Produce(Entry& e, const DescriptorChain& chain, uint32_t capacity) {
  if (e.conn.HasControl()) return WritePacket(chain, *e.conn.TakeControl(), nullptr);
  if (!e.conn.WantsHostRead() || !e.readable || capacity == 0) return 0;
  uint32_t want = std::min(capacity, e.conn.PeerCredit());
  ssize_t n = recv(e.fd.get(), scratch_.data(), want, MSG_DONTWAIT);
  if (n > 0) {
    Header h = e.conn.TakeData(static_cast<uint32_t>(n));
    return WritePacket(chain, h, scratch_.data());
  }
  e.readable = false;
  if (n == 0) e.conn.OnHostEof();
  else if (errno != EAGAIN && errno != EINTR) e.conn.Reset(WithErrno("reading from the host socket"));
  if (e.conn.HasControl()) return WritePacket(chain, *e.conn.TakeControl(), nullptr);
  return 0;
}

uint32_t Muxer::FillRx(const DescriptorChain& chain, uint32_t capacity) {
  if (!orphan_rsts_.empty()) {
    uint32_t n = WritePacket(chain, orphan_rsts_.front(), nullptr);
    orphan_rsts_.pop_front();
    return n;
  }
  // Each ready connection at most once per call. One that has only data for the guest while this
  // buffer has no room for a payload (a guest may post header-only buffers) keeps its place for a
  // bigger buffer, without asking the device for another round: it would get the same buffer
  // back, and the device thread would spin on it (the fuzzer found exactly that loop).
  std::deque<Key> waiting;
  for (size_t turns = ready_.size(); turns > 0 && !ready_.empty(); turns--) {
    Key key = ready_.front();
    ready_.pop_front();
    auto it = conns_.find(key);
    if (it == conns_.end()) continue;
    Entry& e = *it->second;
    if (capacity == 0 && !e.conn.HasControl()) {
      waiting.push_back(key);  // still in_ready: no new round is asked for it
      continue;
    }
    e.in_ready = false;
    uint32_t n = Produce(e, chain, capacity);
    Update(key);  // may requeue it (more to send) or remove it (done)
    if (n) {
      ready_.insert(ready_.begin(), waiting.begin(), waiting.end());
      return n;
    }
  }
  ready_.insert(ready_.end(), waiting.begin(), waiting.end());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Host-initiated connections

void Muxer::OnListenerReadable() {
  for (;;) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) Log(WithErrno("accept on " + options_.uds_path));
      return;
    }
    if (pending_.size() >= options_.max_pending_clients || conns_.size() >= options_.max_connections) {
      Log("too many host clients: closing a new one");
      close(fd);
      continue;
    }
    PendingClient& p = pending_[fd];
    p.fd.reset(fd);
    p.timer = loop_.AddTimer(options_.connect_timeout, [this, fd] {
      auto it = pending_.find(fd);
      if (it == pending_.end()) return;
      it->second.timer = 0;
      Log("host client sent no CONNECT line in time: closing it");
      ClosePending(fd);
    });
    loop_.Add(fd, EPOLLIN, [this, fd](uint32_t ev) { OnPendingClient(fd, ev); });
  }
}

void Muxer::ClosePending(int fd) {
  auto it = pending_.find(fd);
  if (it == pending_.end()) return;
  if (it->second.timer) loop_.CancelTimer(it->second.timer);
  loop_.Remove(fd);
  pending_.erase(it);  // closes it
}

void Muxer::OnPendingClient(int fd, uint32_t events) {
  auto it = pending_.find(fd);
  if (it == pending_.end()) return;
  PendingClient& p = it->second;
  if (events & EPOLLERR) return ClosePending(fd);
  // Consume the line but not a byte beyond it: what follows is data for the guest.
  char buf[kMaxConnectLine];
  size_t room = kMaxConnectLine - p.line.size();
  ssize_t n = recv(fd, buf, room, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) return ClosePending(fd);
  const char* nl = static_cast<const char*>(std::memchr(buf, '\n', static_cast<size_t>(n)));
  size_t take = nl ? static_cast<size_t>(nl - buf) + 1 : static_cast<size_t>(n);
  ssize_t got = recv(fd, buf, take, MSG_DONTWAIT);
  if (got != static_cast<ssize_t>(take)) return ClosePending(fd);
  p.line.append(buf, nl ? take - 1 : take);
  if (!nl) {
    if (p.line.size() >= kMaxConnectLine) {
      Log("host client sent an overlong CONNECT line: closing it");
      ClosePending(fd);
    }
    return;
  }
  std::optional<uint32_t> port = ParseConnectLine(p.line);
  if (!port) {
    Log("host client sent \"" + p.line.substr(0, kMaxConnectLine) + "\", not \"CONNECT <port>\": closing it");
    return ClosePending(fd);
  }
  // Hand the socket over to a connection.
  if (p.timer) loop_.CancelTimer(p.timer);
  loop_.Remove(fd);
  UniqueFd owned(std::move(p.fd));
  pending_.erase(it);
  if (conns_.size() >= options_.max_connections) {
    Log("too many connections: closing a host client");
    return;
  }
  uint32_t local = AllocateLocalPort(*port);
  Key key{local, *port};
  auto e = std::make_unique<Entry>(Connection::ToGuest(guest_cid_, local, *port, options_.buf_alloc));
  e->fd = std::move(owned);
  conns_.emplace(key, std::move(e));
  Update(key);
}

uint32_t Muxer::AllocateLocalPort(uint32_t peer_port) {
  for (;;) {
    uint32_t p = next_local_port_++;
    if (next_local_port_ == 0) next_local_port_ = kFirstLocalPort;
    if (!conns_.count(Key{p, peer_port})) return p;
  }
}

}  // namespace stencil::vsock
