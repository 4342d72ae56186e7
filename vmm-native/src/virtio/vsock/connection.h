// One vsock stream connection between a guest port and a host Unix socket: the connection state
// machine and both directions' credit accounting, as pure logic (no sockets, no queues), so it
// can be tested on its own. The muxer (muxer.h) owns the host socket and asks this class what to
// do: which packet to send the guest next, how much host data it may forward, whether to shut the
// host socket's write side, and when the connection is over.
//
// Credit (virtio "Buffer Space Management"), all counters free-running u32:
//   guest -> host: we advertise buf_alloc (our per-connection buffer) and fwd_cnt (bytes handed to
//     the host socket). The guest may have at most buf_alloc bytes unforwarded; sending more is a
//     protocol violation (RST). A host reader that stops reading therefore stalls the guest writer
//     instead of growing our buffer.
//   host -> guest: the guest advertises its buf_alloc/fwd_cnt in every packet; we never send more
//     than peer_buf_alloc - (tx_cnt - peer_fwd_cnt) bytes, and stop reading the host socket while
//     that credit is 0 (so the host writer blocks in its own socket buffer).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "packet.h"

namespace stencil::vsock {

class Connection {
 public:
  enum class State {
    kHostConnecting,   // the guest sent REQUEST; connecting to the host's <uds>_<port> socket
    kGuestConnecting,  // a host client asked CONNECT; REQUEST queued/sent, awaiting RESPONSE
    kEstablished,
    kClosing,          // both directions finished; we sent SHUTDOWN(both) and await the guest's RST
    kClosed,           // over for the guest (an RST was received, or one is queued); may still drain host-bound data
  };

  // Guest-initiated: `request` is the guest's REQUEST (its credit fields are recorded).
  static Connection FromGuestRequest(uint64_t guest_cid, const Header& request, uint32_t buf_alloc);
  // Host-initiated: a REQUEST from `local_port` to the guest's `peer_port` is queued.
  static Connection ToGuest(uint64_t guest_cid, uint32_t local_port, uint32_t peer_port, uint32_t buf_alloc);

  State state() const { return state_; }
  uint32_t local_port() const { return local_port_; }
  uint32_t peer_port() const { return peer_port_; }
  bool host_initiated() const { return host_initiated_; }
  // Why the connection was reset (a protocol violation by the guest, a host failure, ...).
  const std::string& reset_reason() const { return reset_reason_; }

  // --- guest -> device ------------------------------------------------------------------------
  // One packet for this connection, already checked by CheckTxHeader (so the op is known and
  // `payload` holds h.len bytes for RW). REQUEST never reaches here (the muxer handles it).
  void OnGuestPacket(const Header& h, const uint8_t* payload);

  // --- host socket events ---------------------------------------------------------------------
  void OnHostConnected();                            // kHostConnecting -> kEstablished (RESPONSE queued)
  void Reset(const std::string& why);                // any failure/timeout: queue RST, kClosed
  void OnHostEof();                                  // the host will send no more: SHUTDOWN(SEND) queued
  void OnHostWriteShutdown() { host_write_shut_ = true; }  // the muxer did shutdown(SHUT_WR)

  // Guest -> host data waiting for the host socket (at most buf_alloc bytes).
  const uint8_t* host_bound_data() const { return host_bound_.data() + host_bound_head_; }
  uint32_t host_bound_size() const { return static_cast<uint32_t>(host_bound_.size() - host_bound_head_); }
  void ConsumeHostBound(uint32_t n);  // n bytes were written to the host socket: fwd_cnt += n
  void DropHostBound();               // the host socket is gone: discard (no credit returned)
  // The guest will send no more and everything it sent reached the host socket.
  bool ShouldShutdownHostWrite() const;

  // --- device -> guest ------------------------------------------------------------------------
  // Bytes we may send the guest now (peer credit), 0 if sending data is not allowed at all.
  uint32_t PeerCredit() const;
  // Whether the host socket should be read: established, host not at EOF, guest still
  // receiving, and credit available.
  bool WantsHostRead() const;
  // Whether a control packet (REQUEST/RESPONSE/RST/SHUTDOWN/CREDIT_*) is waiting.
  bool HasControl() const;
  // The next control packet (removes it from the pending set), or nullopt.
  std::optional<Header> TakeControl();
  // Header of an RW packet carrying `len` (1..PeerCredit()) bytes; accounts them as sent.
  Header TakeData(uint32_t len);

  // Finished: nothing more to send the guest and nothing left for the host socket.
  bool Done() const { return state_ == State::kClosed && !HasControl() && host_bound_size() == 0; }

  // Counters, for tests and diagnostics.
  uint32_t buf_alloc() const { return buf_alloc_; }
  uint32_t fwd_cnt() const { return fwd_cnt_; }
  uint32_t rx_cnt() const { return rx_cnt_; }
  uint32_t tx_cnt() const { return tx_cnt_; }
  uint32_t peer_buf_alloc() const { return peer_buf_alloc_; }
  uint32_t peer_fwd_cnt() const { return peer_fwd_cnt_; }
  uint32_t peer_shutdown() const { return peer_shutdown_; }

 private:
  Connection(uint64_t guest_cid, uint32_t local_port, uint32_t peer_port, uint32_t buf_alloc, State state, bool host_initiated);
  Header Stamp(uint16_t op);  // header to the guest with our credit fields filled in
  bool UpdatePeerCredit(const Header& h);  // false: the guest acknowledged bytes never sent
  bool NeedsCreditUpdate() const;
  uint32_t ShutdownToSend() const;
  void CheckBothDirectionsDone();
  void Violation(const std::string& why) { Reset("guest protocol violation: " + why); }

  uint64_t guest_cid_;
  uint32_t local_port_, peer_port_;
  bool host_initiated_;
  State state_;
  std::string reset_reason_;

  // Pending control packets.
  bool send_request_ = false, send_response_ = false, send_rst_ = false;
  bool credit_update_forced_ = false;  // the guest sent CREDIT_REQUEST
  bool send_credit_request_ = false;   // we ran out of credit with data to send

  // Shutdown: flags the guest sent; what we decided (local) and already sent.
  uint32_t peer_shutdown_ = 0, local_shutdown_ = 0, sent_shutdown_ = 0;
  bool host_write_shut_ = false;

  // guest -> host
  uint32_t buf_alloc_;
  uint32_t rx_cnt_ = 0, fwd_cnt_ = 0, last_fwd_cnt_sent_ = 0;
  std::vector<uint8_t> host_bound_;
  size_t host_bound_head_ = 0;

  // host -> guest
  uint32_t tx_cnt_ = 0, peer_buf_alloc_ = 0, peer_fwd_cnt_ = 0;
};

const char* StateName(Connection::State s);

}  // namespace stencil::vsock
