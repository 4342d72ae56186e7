// The host side of the hybrid vsock device: guest vsock flows <-> host Unix sockets.
//
//   guest -> host: a REQUEST to host port P becomes a connection to the Unix socket "<uds>_<P>"
//     (RESPONSE once connected, RST if nobody listens or the connect times out).
//   host -> guest: the device listens on "<uds>"; a client connects and writes "CONNECT <port>\n";
//     we send REQUEST to the guest's <port> and, on RESPONSE, write "OK <local port>\n" to the
//     client (RST or timeout: the client is closed). Afterwards bytes are relayed both ways.
//
// Everything here runs on the device's event-loop thread. The device feeds it the guest's tx
// packets (OnGuestPacket) and asks it to fill rx buffers (FillRx); the muxer tells the device
// when it has something for the rx queue through the `rx_work` callback.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "../../event_loop.h"
#include "../../fd.h"
#include "connection.h"
#include "packet.h"

namespace stencil::vsock {

struct MuxerOptions {
  std::string uds_path;
  uint32_t buf_alloc = 256 * 1024;  // our per-connection receive buffer (guest -> host)
  std::chrono::milliseconds connect_timeout{5000};  // either direction's connection setup
  std::chrono::milliseconds close_timeout{5000};    // waiting for the guest's RST after SHUTDOWN
  std::chrono::milliseconds drain_timeout{10000};   // flushing to a host reader after the guest closed
  uint32_t max_connections = 1024;
  uint32_t max_pending_clients = 128;  // host clients that have not finished their CONNECT line
  std::function<void(const std::string&)> log;  // diagnostics (rate-limited by the caller)
};

// "CONNECT <port>\n" (an optional '\r' before the '\n' is tolerated), the newline excluded.
std::optional<uint32_t> ParseConnectLine(const std::string& line);

class Muxer {
 public:
  // `listen_fd` (may be -1: no host-initiated connections) is a listening Unix socket owned by
  // the caller; the muxer accepts on it while it exists.
  Muxer(EventLoop& loop, uint64_t guest_cid, MuxerOptions options, int listen_fd, std::function<void()> rx_work);
  ~Muxer();  // closes every host socket it owns
  // Host-side ports of host-initiated connections: where the next one comes from, and where a
  // restored device's muxer goes on (never below the first port of the range).
  uint32_t next_local_port() const { return next_local_port_; }
  void ContinueLocalPortsFrom(uint32_t port) { next_local_port_ = port < kFirstLocalPort ? kFirstLocalPort : port; }
  Muxer(const Muxer&) = delete;
  Muxer& operator=(const Muxer&) = delete;

  // A tx packet CheckTxHeader accepted; `payload` holds h.len bytes.
  void OnGuestPacket(const Header& h, const uint8_t* payload);
  // A tx packet CheckTxHeader answered with kReplyRst.
  void ReplyRst(const Header& h);

  bool HasRxWork() const { return !orphan_rsts_.empty() || !ready_.empty(); }
  // Writes the next guest-bound packet into `chain` (which has room for a header plus
  // `capacity` payload bytes). Returns the bytes written, or 0 if there was nothing to send.
  uint32_t FillRx(const DescriptorChain& chain, uint32_t capacity);

  // Forget every connection without telling the guest (it is about to get TRANSPORT_RESET).
  void DropAllConnections();

  size_t connection_count() const { return conns_.size(); }

 private:
  struct Key {
    uint32_t local_port, peer_port;
    bool operator<(const Key& o) const { return local_port != o.local_port ? local_port < o.local_port : peer_port < o.peer_port; }
  };
  struct Entry {
    explicit Entry(Connection c) : conn(std::move(c)) {}
    Connection conn;
    UniqueFd fd;
    bool registered = false;    // fd is in the event loop
    uint32_t events = 0;        // the epoll interest last set
    bool readable = false;      // epoll reported EPOLLIN (or HUP) and we have not seen EAGAIN since
    bool write_blocked = false; // the last write hit EAGAIN; wait for EPOLLOUT
    bool hup = false;           // the host peer is gone (EPOLLHUP): fd removed from epoll
    bool in_ready = false;
    std::string prefix;         // "OK <port>\n" for the host client, before any relayed byte
    EventLoop::TimerId timer = 0;
    std::optional<Connection::State> timer_state;  // the state `timer` was armed for
    Key key() const { return {conn.local_port(), conn.peer_port()}; }
  };
  struct PendingClient {
    UniqueFd fd;
    std::string line;
    EventLoop::TimerId timer = 0;
  };

  void Log(const std::string& msg) {
    if (options_.log) options_.log(msg);
  }
  void QueueOrphanRst(const Header& reply);
  void StartGuestConnection(const Header& request);
  void TryHostConnect(const Key& key);
  void OnHostEvent(const Key& key, uint32_t events);
  void Flush(Entry& e);
  void Update(const Key& key);  // reconcile socket, epoll, timers and the ready list with the state
  void Remove(std::map<Key, std::unique_ptr<Entry>>::iterator it);
  uint32_t Produce(Entry& e, const DescriptorChain& chain, uint32_t capacity);
  void MarkReady(Entry& e);

  void OnListenerReadable();
  void OnPendingClient(int fd, uint32_t events);
  void ClosePending(int fd);
  void StartHostConnection(int fd, uint32_t guest_port);
  uint32_t AllocateLocalPort(uint32_t peer_port);

  EventLoop& loop_;
  uint64_t guest_cid_;
  MuxerOptions options_;
  int listen_fd_;
  std::function<void()> rx_work_;

  std::map<Key, std::unique_ptr<Entry>> conns_;
  std::deque<Key> ready_;  // connections with something for the guest, round-robin
  std::deque<Header> orphan_rsts_;  // RSTs for flows we do not know
  std::unordered_map<int, PendingClient> pending_;
  static constexpr uint32_t kFirstLocalPort = 1u << 30;
  uint32_t next_local_port_ = kFirstLocalPort;
  std::vector<uint8_t> scratch_;
};

}  // namespace stencil::vsock
