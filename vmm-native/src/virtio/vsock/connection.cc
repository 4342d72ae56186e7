#include "connection.h"

#include <algorithm>

namespace stencil::vsock {

const char* StateName(Connection::State s) {
  switch (s) {
    case Connection::State::kHostConnecting: return "host-connecting";
    case Connection::State::kGuestConnecting: return "guest-connecting";
    case Connection::State::kEstablished: return "established";
    case Connection::State::kClosing: return "closing";
    case Connection::State::kClosed: return "closed";
  }
  return "?";
}

Connection::Connection(uint64_t guest_cid, uint32_t local_port, uint32_t peer_port, uint32_t buf_alloc, State state,
                       bool host_initiated)
    : guest_cid_(guest_cid), local_port_(local_port), peer_port_(peer_port), host_initiated_(host_initiated),
      state_(state), buf_alloc_(buf_alloc) {}

Connection Connection::FromGuestRequest(uint64_t guest_cid, const Header& request, uint32_t buf_alloc) {
  Connection c(guest_cid, request.dst_port, request.src_port, buf_alloc, State::kHostConnecting, false);
  // Start our send counter at the guest's receive counter: nothing is in flight.
  c.peer_buf_alloc_ = request.buf_alloc;
  c.peer_fwd_cnt_ = c.tx_cnt_ = request.fwd_cnt;
  return c;
}

Connection Connection::ToGuest(uint64_t guest_cid, uint32_t local_port, uint32_t peer_port, uint32_t buf_alloc) {
  Connection c(guest_cid, local_port, peer_port, buf_alloc, State::kGuestConnecting, true);
  c.send_request_ = true;
  return c;
}

bool Connection::UpdatePeerCredit(const Header& h) {
  uint32_t newly_acked = h.fwd_cnt - peer_fwd_cnt_;
  uint32_t outstanding = tx_cnt_ - peer_fwd_cnt_;
  if (newly_acked > outstanding) return false;
  peer_fwd_cnt_ = h.fwd_cnt;
  peer_buf_alloc_ = h.buf_alloc;
  return true;
}

void Connection::OnGuestPacket(const Header& h, const uint8_t* payload) {
  if (state_ == State::kClosed) return;  // stragglers after a reset carry no meaning
  if (h.op == kOpRst) {
    state_ = State::kClosed;
    send_request_ = send_response_ = send_rst_ = credit_update_forced_ = send_credit_request_ = false;
    reset_reason_ = "reset by the guest";
    DropHostBound();
    return;
  }
  if (state_ == State::kGuestConnecting && h.op == kOpResponse) {
    // First word from the guest on this flow: adopt its counters as they are.
    peer_buf_alloc_ = h.buf_alloc;
    peer_fwd_cnt_ = tx_cnt_ = h.fwd_cnt;
    state_ = State::kEstablished;
    send_request_ = false;
    return;
  }
  if (!UpdatePeerCredit(h))
    return Violation("fwd_cnt " + std::to_string(h.fwd_cnt) + " acknowledges bytes never sent (tx_cnt " +
                     std::to_string(tx_cnt_) + ")");
  bool connected = state_ == State::kEstablished || state_ == State::kClosing;
  switch (h.op) {
    case kOpRw: {
      if (state_ != State::kEstablished) return Violation(std::string("data while ") + StateName(state_));
      if (peer_shutdown_ & kShutdownSend) return Violation("data after SHUTDOWN(SEND)");
      if (uint64_t(host_bound_size()) + h.len > buf_alloc_)
        return Violation("RW of " + std::to_string(h.len) + " bytes exceeds the credit (" +
                         std::to_string(buf_alloc_ - host_bound_size()) + " free of " + std::to_string(buf_alloc_) + ")");
      if (host_bound_head_ == host_bound_.size()) host_bound_.clear(), host_bound_head_ = 0;
      host_bound_.insert(host_bound_.end(), payload, payload + h.len);
      rx_cnt_ += h.len;
      return;
    }
    case kOpCreditUpdate:
      return;  // the credit fields were taken above
    case kOpCreditRequest:
      if (connected) credit_update_forced_ = true;
      return;
    case kOpShutdown:
      if (!connected) return Violation(std::string("SHUTDOWN while ") + StateName(state_));
      peer_shutdown_ |= h.flags;
      if (peer_shutdown_ == kShutdownBoth) {
        // The guest is done with the flow (close()): answer with RST as the clean disconnect
        // requires, but still deliver what it sent to the host socket.
        state_ = State::kClosed;
        send_request_ = send_response_ = credit_update_forced_ = send_credit_request_ = false;
        send_rst_ = true;
        return;
      }
      CheckBothDirectionsDone();
      return;
    default:  // REQUEST on an existing flow, RESPONSE out of turn
      return Violation(std::string(OpName(h.op)) + " while " + StateName(state_));
  }
}

void Connection::OnHostConnected() {
  if (state_ != State::kHostConnecting) return;
  state_ = State::kEstablished;
  send_response_ = true;
}

void Connection::Reset(const std::string& why) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  send_request_ = send_response_ = credit_update_forced_ = send_credit_request_ = false;
  send_rst_ = true;
  reset_reason_ = why;
  DropHostBound();
}

void Connection::OnHostEof() {
  if (state_ != State::kEstablished) return;
  local_shutdown_ |= kShutdownSend;
  CheckBothDirectionsDone();
}

void Connection::CheckBothDirectionsDone() {
  if (state_ == State::kEstablished && (local_shutdown_ & kShutdownSend) && (peer_shutdown_ & kShutdownSend) &&
      host_bound_size() == 0) {
    local_shutdown_ = kShutdownBoth;
    state_ = State::kClosing;
  }
}

void Connection::ConsumeHostBound(uint32_t n) {
  n = std::min(n, host_bound_size());
  host_bound_head_ += n;
  fwd_cnt_ += n;
  if (host_bound_head_ == host_bound_.size()) {
    host_bound_.clear();
    host_bound_head_ = 0;
  } else if (host_bound_head_ >= 64 * 1024 && host_bound_head_ * 2 >= host_bound_.size()) {
    host_bound_.erase(host_bound_.begin(), host_bound_.begin() + static_cast<std::ptrdiff_t>(host_bound_head_));
    host_bound_head_ = 0;
  }
  CheckBothDirectionsDone();
}

void Connection::DropHostBound() {
  host_bound_.clear();
  host_bound_.shrink_to_fit();
  host_bound_head_ = 0;
}

bool Connection::ShouldShutdownHostWrite() const {
  return (peer_shutdown_ & kShutdownSend) && host_bound_size() == 0 && !host_write_shut_;
}

uint32_t Connection::PeerCredit() const {
  if (state_ != State::kEstablished || (peer_shutdown_ & kShutdownRecv) || (local_shutdown_ & kShutdownSend)) return 0;
  uint32_t in_flight = tx_cnt_ - peer_fwd_cnt_;
  return in_flight >= peer_buf_alloc_ ? 0 : peer_buf_alloc_ - in_flight;
}

bool Connection::WantsHostRead() const { return PeerCredit() > 0; }

uint32_t Connection::ShutdownToSend() const {
  if (state_ != State::kEstablished && state_ != State::kClosing) return 0;
  return local_shutdown_ & ~sent_shutdown_;
}

bool Connection::NeedsCreditUpdate() const {
  if (state_ != State::kEstablished && state_ != State::kClosing) return false;
  if (credit_update_forced_) return true;
  if (peer_shutdown_ & kShutdownSend) return false;  // the guest sends no more: credit is moot
  return fwd_cnt_ - last_fwd_cnt_sent_ >= std::max<uint32_t>(1, buf_alloc_ / 4);
}

bool Connection::HasControl() const {
  return send_rst_ || send_request_ || send_response_ || ShutdownToSend() != 0 || NeedsCreditUpdate() ||
         (send_credit_request_ && state_ == State::kEstablished);
}

Header Connection::Stamp(uint16_t op) {
  Header h;
  h.src_cid = kHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = local_port_;
  h.dst_port = peer_port_;
  h.type = kTypeStream;
  h.op = op;
  h.buf_alloc = buf_alloc_;
  h.fwd_cnt = fwd_cnt_;
  last_fwd_cnt_sent_ = fwd_cnt_;
  credit_update_forced_ = false;
  return h;
}

std::optional<Header> Connection::TakeControl() {
  if (send_rst_) {
    send_rst_ = false;
    return Stamp(kOpRst);
  }
  if (send_request_) {
    send_request_ = false;
    return Stamp(kOpRequest);
  }
  if (send_response_) {
    send_response_ = false;
    return Stamp(kOpResponse);
  }
  if (uint32_t flags = ShutdownToSend()) {
    sent_shutdown_ |= flags;
    Header h = Stamp(kOpShutdown);
    h.flags = sent_shutdown_;  // flags are cumulative
    return h;
  }
  if (NeedsCreditUpdate()) return Stamp(kOpCreditUpdate);
  if (send_credit_request_ && state_ == State::kEstablished) {
    send_credit_request_ = false;
    return Stamp(kOpCreditRequest);
  }
  return std::nullopt;
}

Header Connection::TakeData(uint32_t len) {
  len = std::min(len, PeerCredit());
  tx_cnt_ += len;
  Header h = Stamp(kOpRw);
  h.len = len;
  if (PeerCredit() == 0) send_credit_request_ = true;
  return h;
}

}  // namespace stencil::vsock
