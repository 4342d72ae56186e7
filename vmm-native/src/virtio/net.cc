#include "net.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <cstdio>
#include <cstring>

#include "../error.h"

namespace stencil {

namespace {

constexpr uint32_t kMaxChainsPerRound = 256;  // then let the other queue have a turn
constexpr uint64_t kNumBuffersOffset = 10;     // le16 num_buffers in virtio_net_hdr_v1

// A message over the chain's buffers (a chain has at most kQueueSize descriptors: Pop checks).
msghdr ToMessage(const std::vector<DescriptorBuffer>& bufs, iovec* iov) {
  msghdr msg{};
  msg.msg_iov = iov;
  for (const DescriptorBuffer& b : bufs)
    if (b.len) iov[msg.msg_iovlen++] = {b.data, b.len};
  return msg;
}

}  // namespace

VirtioNet::VirtioNet(UniqueFd backend, const Mac& mac, LogFn log)
    : backend_(std::move(backend)), mac_(mac), log_(std::move(log)) {
  if (!log_) log_ = [](const std::string& m) { std::fprintf(stderr, "stencil-vmm: %s\n", m.c_str()); };
  if (!backend_.valid()) {
    backend_gone_ = true;  // no wire: tx frames are dropped, rx buffers wait forever
    return;
  }
  int flags = fcntl(backend_.get(), F_GETFL);
  if (flags < 0 || fcntl(backend_.get(), F_SETFL, flags | O_NONBLOCK) < 0)
    throw VmmError(ErrorCode::kInvalidArgument, WithErrno("virtio-net backend fd " + std::to_string(backend_.get())));
  struct stat st;
  backend_is_socket_ = fstat(backend_.get(), &st) == 0 && S_ISSOCK(st.st_mode);
}

VirtioNet::~VirtioNet() {
  std::lock_guard<std::mutex> lock(mu_);
  StopLocked();
}

void VirtioNet::ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) {
  // struct virtio_net_config { u8 mac[6]; le16 status; ... }: the fields past status belong to
  // features not offered and read as zero.
  uint8_t cfg[8] = {};
  std::memcpy(cfg, mac_.data(), mac_.size());
  cfg[6] = static_cast<uint8_t>(kStatusLinkUp), cfg[7] = static_cast<uint8_t>(kStatusLinkUp >> 8);
  for (uint32_t i = 0; i < len; i++) data[i] = offset + i < sizeof cfg ? cfg[offset + i] : 0;
}

void VirtioNet::Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) {
  std::lock_guard<std::mutex> lock(mu_);
  if (active_) return;
  // Chains are gathered into kQueueSize iovecs on the stack: no queue may be larger.
  if (queues.size() != kNumQueues || queues[0].max_size() > kQueueSize || queues[1].max_size() > kQueueSize) {
    irq.SignalNeedsReset();
    return;
  }
  mem_ = &mem;
  irq_ = &irq;
  for (uint32_t i = 0; i < kNumQueues; i++) queues_[i] = &queues[i];
  if (restored_) {
    restored_->ApplyTo(queues_);
    restored_.reset();
  }
  held_rx_.reset(), held_tx_.reset();
  broken_ = false;
  watched_ = 0;
  loop_ = std::make_unique<EventLoop>();
  loop_->Add(kicks_.fd(), EPOLLIN, [this](uint32_t) { OnNotify(); });
  active_ = true;
  // The driver posts rx buffers before DRIVER_OK: look at both queues once.
  kicks_.Kick((1u << kNumQueues) - 1);
  if (!quiesced_) loop_->Start("virtio-net");
}

void VirtioNet::QueueNotify(uint32_t index) {
  if (index >= kNumQueues) return;
  kicks_.Kick(1u << index);
}

void VirtioNet::StopLocked() {
  if (loop_) loop_->Stop();
  loop_.reset();  // unregisters the backend; the fd stays open for a later activation
  held_rx_.reset(), held_tx_.reset();
  mem_ = nullptr, irq_ = nullptr;
  for (auto& q : queues_) q = nullptr;
  watched_ = 0;
  kicks_.Clear();
  active_ = false;
}

void VirtioNet::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  StopLocked();
}

void VirtioNet::Quiesce() {
  std::lock_guard<std::mutex> lock(mu_);
  quiesced_ = true;
  if (loop_) loop_->Stop();  // joins the thread: no chain is being filled once this returns
}

void VirtioNet::Unquiesce() {
  std::lock_guard<std::mutex> lock(mu_);
  quiesced_ = false;
  if (loop_ && active_) loop_->Start("virtio-net");  // notifications from the pause are kept
}

void VirtioNet::RunQuiescedLoop(int rounds) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!quiesced_ || !loop_ || loop_->running()) throw VmmError(ErrorCode::kState, "virtio-net: RunQuiescedLoop needs an activated, quiesced device");
  while (rounds-- > 0) loop_->RunOnce(0);
}

VirtioNet::State VirtioNet::SaveState() {
  std::lock_guard<std::mutex> lock(mu_);
  if (loop_ && loop_->running()) throw VmmError(ErrorCode::kState, "virtio-net device must be quiesced to save its state");
  State s;
  s.activated = active_;
  s.mac = mac_;
  if (active_) {
    s.Capture(queues_);
    // Chains popped but not used go back to the driver's side of the ring: the restored device
    // pops them again.
    if (held_rx_) s.next_avail[kRxQueue]--;
    if (held_tx_) s.next_avail[kTxQueue]--;
  }
  return s;
}

void VirtioNet::RestoreState(const State& state) {
  std::lock_guard<std::mutex> lock(mu_);
  if (active_) throw VmmError(ErrorCode::kState, "virtio-net state can only be restored before activation");
  if (state.activated) restored_ = state;
}

// ---------------------------------------------------------------------------------------------
// Loop thread

void VirtioNet::OnNotify() {
  uint32_t bits = kicks_.Take();
  if (broken_) return;
  // A tx chain waiting for room in the backend resumes on EPOLLOUT, not on every guest kick.
  if ((bits & (1u << kTxQueue)) && !(watched_ & EPOLLOUT)) ProcessTx();
  if (bits & (1u << kRxQueue)) ProcessRx();
}

void VirtioNet::OnBackend(uint32_t events) {
  if (events & EPOLLOUT) ProcessTx();
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ProcessRx();
  // A hung-up backend stays readable (or in error) forever: deliver what fitted, then stop.
  if ((events & (EPOLLHUP | EPOLLERR)) && !backend_gone_) BackendGone("backend hung up");
}

void VirtioNet::UpdateWatch() {
  uint32_t events = 0;
  if (!backend_gone_ && !broken_) {
    // Without an rx chain a waiting packet stays in the backend, and the loop sleeps until the
    // guest posts buffers (rx notify) rather than spinning on a readable fd.
    if (held_rx_) events |= EPOLLIN;
    if (held_tx_) events |= EPOLLOUT;
  }
  if (events == watched_) return;
  int fd = backend_.get();
  if (events == 0) loop_->Remove(fd);
  else if (watched_ == 0) loop_->Add(fd, events, [this](uint32_t ev) { OnBackend(ev); });
  else loop_->Modify(fd, events);
  watched_ = events;
}

void VirtioNet::BackendGone(const std::string& why) {
  Log(why + ": no more packets to or from the host (tx packets are dropped)");
  backend_gone_ = true;
  UpdateWatch();
  if (held_tx_) QueueNotify(kTxQueue);  // a later tx pass returns the chain that waited for room
}

void VirtioNet::Broken(const std::string& why) {
  Log("the driver broke the virtqueue contract (" + why + "): device needs reset");
  broken_ = true;
  irq_->SignalNeedsReset();
}

void VirtioNet::ProcessTx() {
  if (broken_) return;
  Virtqueue& q = *queues_[kTxQueue];
  bool used = false;
  try {
    uint32_t budget = kMaxChainsPerRound;
    for (;;) {
      if (!held_tx_) held_tx_ = q.Pop(*mem_);
      if (!held_tx_) break;
      if (!SendTx(*held_tx_)) break;  // the backend is full: EPOLLOUT resumes
      q.PushUsed(*mem_, held_tx_->head, 0);
      held_tx_.reset();
      used = true;
      if (--budget == 0) {
        QueueNotify(kTxQueue);  // continue after rx had a turn
        break;
      }
    }
    if (used && q.NeedsInterrupt(*mem_)) irq_->SignalUsedBuffer();
  } catch (const VirtqueueError& e) {
    Broken(std::string("tx queue: ") + e.what());
  }
  UpdateWatch();
}

bool VirtioNet::SendTx(const DescriptorChain& chain) {
  if (backend_gone_) return true;  // dropped: there is nobody to send it to
  // Guest-controlled: check before touching the backend; a bad chain is dropped, not fatal.
  if (!chain.writable.empty()) {
    Log("dropped a tx chain with " + std::to_string(chain.writable.size()) + " device-writable buffers");
    return true;
  }
  uint64_t total = chain.readable_bytes();
  if (total < kHeaderSize || total > kMaxPacket) {
    Log("dropped a tx packet of " + std::to_string(total) + " bytes: a packet is " + std::to_string(kHeaderSize) +
        " (the header) to " + std::to_string(kMaxPacket) + " bytes");
    return true;
  }
  iovec iov[kQueueSize];
  msghdr msg = ToMessage(chain.readable, iov);
  for (;;) {
    ssize_t r = backend_is_socket_ ? sendmsg(backend_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL)  // EPIPE, not SIGPIPE
                                   : writev(backend_.get(), iov, static_cast<int>(msg.msg_iovlen));
    if (r >= 0) return true;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    if (errno == EPIPE || errno == ECONNRESET || errno == EBADFD) {
      BackendGone(WithErrno("backend write"));
      return true;
    }
    // A tap refuses frames while its interface is down (EIO) or a header it dislikes (EINVAL).
    Log(WithErrno("dropped a tx packet of " + std::to_string(total) + " bytes: backend write"));
    return true;
  }
}

void VirtioNet::ProcessRx() {
  if (broken_ || backend_gone_) return;
  Virtqueue& q = *queues_[kRxQueue];
  bool used = false;
  try {
    for (uint32_t budget = kMaxChainsPerRound; budget > 0; budget--) {
      // A buffer first, then the packet: with no buffer the packet stays in the backend.
      if (!held_rx_) held_rx_ = q.Pop(*mem_);
      if (!held_rx_) break;  // the guest notifies when it posts buffers
      const DescriptorChain& chain = *held_rx_;
      uint64_t room = chain.writable_bytes();
      if (room < kHeaderSize) {
        Log("rx buffer of " + std::to_string(room) + " bytes cannot hold the packet header: returned empty");
        q.PushUsed(*mem_, chain.head, 0);
        held_rx_.reset();
        used = true;
        continue;
      }
      iovec iov[kQueueSize];
      msghdr msg = ToMessage(chain.writable, iov);
      // With MSG_TRUNC a socket returns the packet's full size. A tap reports a frame longer than
      // the buffers the same way, as far as it can: one that fills them exactly is accepted.
      ssize_t r = backend_is_socket_ ? recvmsg(backend_.get(), &msg, MSG_DONTWAIT | MSG_TRUNC)
                                     : readv(backend_.get(), iov, static_cast<int>(msg.msg_iovlen));
      bool truncated = r > 0 && ((msg.msg_flags & MSG_TRUNC) || uint64_t(r) > room);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EFAULT || errno == EMSGSIZE) {  // a tap that could not fit the frame (it is gone)
          Log(WithErrno("dropped an rx packet larger than the guest's " + std::to_string(room) + "-byte buffer"));
          continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) BackendGone(WithErrno("backend read"));
        break;  // nothing waiting: EPOLLIN brings the next packet
      }
      if (r == 0) {  // a tap never reads 0; a socket does once its peer closed
        BackendGone("backend closed");
        break;
      }
      if (truncated || uint64_t(r) < kHeaderSize) {
        Log("dropped an rx packet of " + std::to_string(r) + " bytes: " +
            (truncated ? "larger than the guest's " + std::to_string(room) + "-byte buffer" : "shorter than the header"));
        continue;  // the chain waits for the next packet
      }
      uint8_t num_buffers[2] = {1, 0};  // le16 1: without MRG_RXBUF every packet fills one chain
      chain.CopyToWritable(num_buffers, sizeof num_buffers, kNumBuffersOffset);
      q.PushUsed(*mem_, chain.head, static_cast<uint32_t>(r));
      held_rx_.reset();
      used = true;
    }
    if (used && q.NeedsInterrupt(*mem_)) irq_->SignalUsedBuffer();
  } catch (const VirtqueueError& e) {
    Broken(std::string("rx queue: ") + e.what());
  }
  UpdateWatch();
}

}  // namespace stencil
