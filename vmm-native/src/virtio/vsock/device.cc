#include "device.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdio>
#include <cstring>
#include <future>

#include "../../error.h"
#include "../../host/unix_socket.h"

namespace stencil {

using namespace vsock;

namespace {

constexpr uint32_t kMaxChainsPerRound = 256;  // then let host sockets have a turn
constexpr size_t kLongestPortSuffix = 11;     // "_4294967295"

std::string Dirname(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void VirtioVsock::ValidateGuestCid(uint64_t guest_cid) {
  if (guest_cid < 3 || guest_cid >= 0xffffffffULL)
    throw VmmError(ErrorCode::kInvalidArgument, "vsock.guestCid " + std::to_string(guest_cid) +
                                                    " is reserved or out of range: use 3..4294967294");
}

VirtioVsock::VirtioVsock(uint64_t guest_cid, MuxerOptions options)
    : guest_cid_(guest_cid), options_(std::move(options)), scratch_(kMaxPayload) {
  ValidateGuestCid(guest_cid_);
  const std::string& path = options_.uds_path;
  if (path.empty()) throw VmmError(ErrorCode::kInvalidArgument, "vsock.udsPath is empty");
  if (path.size() + kLongestPortSuffix >= sizeof(sockaddr_un::sun_path))
    throw VmmError(ErrorCode::kInvalidArgument,
                   "vsock.udsPath " + path + " is too long for a Unix socket (with the \"_<port>\" suffix it must stay under " +
                       std::to_string(sizeof(sockaddr_un::sun_path)) + " bytes)");
  if (options_.buf_alloc == 0) throw VmmError(ErrorCode::kInvalidArgument, "vsock buffer size must be positive");
  struct stat st;
  if (stat(Dirname(path).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw VmmError(ErrorCode::kInvalidArgument, WithErrno("vsock.udsPath " + path + ": directory " + Dirname(path)));
  if (!options_.log) options_.log = [](const std::string& m) { std::fprintf(stderr, "stencil-vmm: %s\n", m.c_str()); };
  Bind();
}

VirtioVsock::~VirtioVsock() {
  std::lock_guard<std::mutex> lock(mu_);
  StopLocked();
  Unbind();
}

void VirtioVsock::Bind() {
  const std::string& path = options_.uds_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw VmmError(ErrorCode::kInvalidArgument, "vsock.udsPath " + path + " exists and is not a socket");
    // A socket file nobody accepts on is left over from a VMM that died: replace it. A live one
    // belongs to someone else.
    UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.valid() && connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
      throw VmmError(ErrorCode::kInvalidArgument, "vsock.udsPath " + path + " is in use by another process");
    unlink(path.c_str());
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw VmmError(ErrorCode::kState, WithErrno("socket(AF_UNIX)"));
  if (int err = BindOwnerOnly(fd.get(), addr))
    throw VmmError(ErrorCode::kInvalidArgument, WithErrno("vsock.udsPath " + path + ": bind", err));
  if (listen(fd.get(), 128) < 0) {
    int err = errno;
    unlink(path.c_str());
    throw VmmError(ErrorCode::kState, WithErrno("listen on " + path, err));
  }
  listener_ = std::move(fd);
}

void VirtioVsock::Unbind() {
  if (!listener_.valid()) return;
  listener_.reset();
  unlink(options_.uds_path.c_str());
}

void VirtioVsock::ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) {
  // struct virtio_vsock_config { le64 guest_cid; }: bytes past it read as zero.
  for (uint32_t i = 0; i < len; i++) {
    uint64_t off = offset + i;
    data[i] = off < 8 ? static_cast<uint8_t>(guest_cid_ >> (8 * off)) : 0;
  }
}

void VirtioVsock::Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) {
  std::lock_guard<std::mutex> lock(mu_);
  if (active_) return;
  if (queues.size() != kNumQueues) {
    irq.SignalNeedsReset();
    return;
  }
  mem_ = &mem;
  irq_ = &irq;
  for (uint32_t i = 0; i < kNumQueues; i++) queues_[i] = &queues[i];
  uint32_t next_local_port = 0;
  if (restored_) {
    restored_->ApplyTo(queues_);
    next_local_port = restored_->next_local_port;
    stale_cid_ = restored_->guest_cid != guest_cid_ ? restored_->guest_cid : 0;
    restored_.reset();
    reset_event_pending_ = true;
  }
  held_rx_.reset();
  rx_posted_ = broken_ = awaiting_reset_ack_ = false;
  kicks_.Clear();
  try {
    if (!listener_.valid()) Bind();  // after a driver reset
  } catch (const VmmError& e) {
    Log(std::string("host-initiated connections are unavailable: ") + e.what());
  }
  loop_ = std::make_unique<EventLoop>();
  MuxerOptions muxer_options = options_;
  muxer_options.log = [this](const std::string& m) { Log(m); };  // rate-limited: the guest drives it
  muxer_ = std::make_unique<Muxer>(*loop_, guest_cid_, std::move(muxer_options),
                                   listener_.valid() ? listener_.get() : -1, [this] { ScheduleRx(); });
  if (next_local_port) muxer_->ContinueLocalPortsFrom(next_local_port);
  loop_->Add(kicks_.fd(), EPOLLIN, [this](uint32_t) { OnNotify(); });
  active_ = true;
  // The driver fills rx/event buffers before DRIVER_OK; look at every queue once.
  kicks_.Kick((1u << kNumQueues) - 1);
  if (!paused_) loop_->Start("vsock");
}

void VirtioVsock::QueueNotify(uint32_t index) {
  if (index >= kNumQueues) return;
  kicks_.Kick(1u << index);
}

void VirtioVsock::StopLocked() {
  if (loop_) loop_->Stop();
  muxer_.reset();  // closes every connection's host socket and pending client
  loop_.reset();
  held_rx_.reset();
  mem_ = nullptr, irq_ = nullptr;
  for (auto& q : queues_) q = nullptr;
  active_ = false;
}

void VirtioVsock::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  StopLocked();
  Unbind();
  reset_event_pending_ = false;
}

void VirtioVsock::Pause() {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = true;
  if (loop_) loop_->Stop();
}

void VirtioVsock::Resume() {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = false;
  if (loop_ && active_) loop_->Start("vsock");  // notifications and tasks from the pause are kept
}

VirtioVsock::State VirtioVsock::SaveState() {
  std::lock_guard<std::mutex> lock(mu_);
  if (loop_ && loop_->running()) throw VmmError(ErrorCode::kState, "vsock device must be paused to save its state");
  State s;
  s.guest_cid = guest_cid_;
  s.activated = active_;
  if (active_) {
    s.next_local_port = muxer_->next_local_port();
    s.Capture(queues_);
    // A popped but unfilled rx chain goes back to the driver's side of the ring.
    if (held_rx_) s.next_avail[kRxQueue]--;
  }
  return s;
}

void VirtioVsock::RestoreState(const State& state) {
  std::lock_guard<std::mutex> lock(mu_);
  if (active_) throw VmmError(ErrorCode::kState, "vsock state can only be restored before activation");
  if (state.activated) restored_ = state;
}

void VirtioVsock::SendTransportReset() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!active_) {
    reset_event_pending_ = true;  // delivered once the driver activates the device
    return;
  }
  auto task = [this] {
    muxer_->DropAllConnections();
    reset_event_pending_ = true;
    ProcessEvents();
  };
  if (loop_->running()) loop_->Post(task);
  else task();  // paused: the loop thread is not running, so this thread may act for it
}

size_t VirtioVsock::connection_count() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!muxer_) return 0;
  if (!loop_->running()) return muxer_->connection_count();
  std::promise<size_t> result;
  loop_->Post([&] { result.set_value(muxer_->connection_count()); });
  return result.get_future().get();
}

// ---------------------------------------------------------------------------------------------
// Loop thread

void VirtioVsock::OnNotify() {
  uint32_t bits = kicks_.Take();
  if (broken_) return;
  if (bits & (1u << kTxQueue)) ProcessTx();
  if (bits & (1u << kEventQueue)) ProcessEvents();
  if (bits & (1u << kRxQueue)) ProcessRx();
}

void VirtioVsock::ScheduleRx() {
  if (rx_posted_ || !loop_) return;
  rx_posted_ = true;
  loop_->Post([this] {
    rx_posted_ = false;
    ProcessRx();
  });
}

void VirtioVsock::Broken(const std::string& why) {
  Log("the driver broke the virtqueue contract (" + why + "): device needs reset");
  broken_ = true;
  irq_->SignalNeedsReset();
}

void VirtioVsock::ProcessTx() {
  Virtqueue& q = *queues_[kTxQueue];
  bool used = false;
  try {
    uint32_t budget = kMaxChainsPerRound;
    while (auto chain = q.Pop(*mem_)) {
      HandleTxChain(*chain);
      q.PushUsed(*mem_, chain->head, 0);
      used = true;
      if (--budget == 0) {
        QueueNotify(kTxQueue);  // continue after the host sockets had a turn
        break;
      }
    }
    if (used && q.NeedsInterrupt(*mem_)) irq_->SignalUsedBuffer();
  } catch (const VirtqueueError& e) {
    Broken(std::string("tx queue: ") + e.what());
  }
}

void VirtioVsock::HandleTxChain(const DescriptorChain& chain) {
  uint64_t readable = chain.readable_bytes();
  std::optional<Header> h = ReadHeader(chain);
  if (!h) {
    Log("dropped a tx packet of " + std::to_string(readable) + " bytes: shorter than the 44-byte header");
    return;
  }
  if (stale_cid_ != 0 && h->src_cid == stale_cid_) return;  // sent before the clone learnt its CID
  TxCheck check = CheckTxHeader(*h, guest_cid_, readable - kHeaderSize);
  if (check.verdict == TxVerdict::kDrop) {
    Log("dropped a malformed tx packet (" + check.why + "): " + Describe(*h));
    return;
  }
  if (check.verdict == TxVerdict::kReplyRst) {
    Log("answered a malformed tx packet with RST (" + check.why + "): " + Describe(*h));
    muxer_->ReplyRst(*h);
    return;
  }
  if (h->op == kOpRw && h->len > 0 && chain.CopyFromReadable(scratch_.data(), h->len, kHeaderSize) != h->len) {
    muxer_->ReplyRst(*h);  // cannot happen after CheckTxHeader, but never read past the chain
    return;
  }
  muxer_->OnGuestPacket(*h, scratch_.data());
}

void VirtioVsock::ProcessRx() {
  if (broken_ || !muxer_ || awaiting_reset_ack_) return;
  Virtqueue& q = *queues_[kRxQueue];
  bool used = false;
  try {
    uint32_t budget = kMaxChainsPerRound;
    while (muxer_->HasRxWork()) {
      if (!held_rx_) held_rx_ = q.Pop(*mem_);
      if (!held_rx_) break;  // the guest will notify when it adds buffers
      const DescriptorChain& chain = *held_rx_;
      uint32_t n = 0;
      if (chain.writable_bytes() < kHeaderSize) {
        Log("rx buffer of " + std::to_string(chain.writable_bytes()) + " bytes cannot hold a packet header: returned empty");
      } else {
        uint32_t capacity = RxPayloadCapacity(chain);
        n = muxer_->FillRx(chain, capacity);
        // Nothing after all: keep the chain for the next packet, unless it has no room for a
        // payload and only data is pending. Held, it would be offered first forever and the
        // data would never reach the bigger buffers behind it.
        if (n == 0 && capacity > 0) break;
        if (n == 0) Log("rx buffer of " + std::to_string(chain.writable_bytes()) + " bytes has no room for data: returned empty");
      }
      q.PushUsed(*mem_, chain.head, n);
      held_rx_.reset();
      used = true;
      if (--budget == 0) {
        ScheduleRx();
        break;
      }
    }
    if (used && q.NeedsInterrupt(*mem_)) irq_->SignalUsedBuffer();
  } catch (const VirtqueueError& e) {
    Broken(std::string("rx queue: ") + e.what());
  }
}

void VirtioVsock::ProcessEvents() {
  if (broken_) return;
  Virtqueue& q = *queues_[kEventQueue];
  try {
    if (awaiting_reset_ack_ && q.PublishedIdx(*mem_) != reset_avail_idx_) {
      awaiting_reset_ack_ = false;  // the guest gave an event buffer back: its reset is done
      ScheduleRx();
    }
    while (reset_event_pending_) {
      // Read before the event goes out: the guest may hand the buffer back at once.
      const uint16_t published = q.PublishedIdx(*mem_);
      std::optional<DescriptorChain> chain = q.Pop(*mem_);
      if (!chain) return;  // delivered when the guest adds an event buffer
      uint8_t event[kEventSize] = {kEventTransportReset, 0, 0, 0};  // le32 id
      uint32_t n = 0;
      if (chain->writable_bytes() >= kEventSize) {
        n = static_cast<uint32_t>(chain->CopyToWritable(event, kEventSize));
        reset_event_pending_ = false;
        awaiting_reset_ack_ = true, reset_avail_idx_ = published;
      }
      q.PushUsed(*mem_, chain->head, n);
      if (q.NeedsInterrupt(*mem_)) irq_->SignalUsedBuffer();
    }
  } catch (const VirtqueueError& e) {
    Broken(std::string("event queue: ") + e.what());
  }
}

void VirtioVsock::Log(const std::string& msg) { log_limiter_.Log(options_.log, "vsock: ", msg); }

}  // namespace stencil
