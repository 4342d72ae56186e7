// virtio-net (device type 1) over a host backend fd: a tap device (host/tap.h: IFF_TAP |
// IFF_NO_PI | IFF_VNET_HDR, vnet header size 12) or, in tests, one end of a SOCK_SEQPACKET
// socketpair. Either way one read or write is one packet: the 12-byte virtio_net_hdr_v1 followed
// by an Ethernet frame, so frames pass between the guest's buffers and the backend without being
// copied. Without a backend the device is a NIC with nothing on the wire: a template's, whose
// clones get a tap of their own (tx frames are dropped, nothing is ever received).
//
// No offloads, no mergeable rx buffers, one queue pair, no control queue: every header the
// device writes is all zero but num_buffers = 1, and the guest's tx headers go to the backend
// as they are (without offloads they ask for nothing).
//
// Threading (as virtio-vsock): QueueNotify (vCPU thread) sets a bit and writes an eventfd; all
// queue processing and backend I/O happen on the device's event-loop thread, which runs from
// Activate() to Reset()/destruction and is stopped by Quiesce().
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "../event_loop.h"
#include "../fd.h"
#include "../log_limiter.h"
#include "device.h"
#include "queue_kicks.h"

namespace stencil {

class VirtioNet : public VirtioDevice {
 public:
  static constexpr uint32_t kDeviceType = 1;
  static constexpr uint64_t kFeatureMac = 1ULL << 5;      // VIRTIO_NET_F_MAC
  static constexpr uint64_t kFeatureStatus = 1ULL << 16;  // VIRTIO_NET_F_STATUS
  static constexpr uint16_t kStatusLinkUp = 1;            // VIRTIO_NET_S_LINK_UP
  static constexpr uint32_t kHeaderSize = 12;             // virtio_net_hdr_v1 (num_buffers included)
  static constexpr uint32_t kMaxPacket = 65550;           // header + a 64 KiB frame with link-layer headroom
  static constexpr uint16_t kQueueSize = 256;
  enum Queue : uint32_t { kRxQueue = 0, kTxQueue = 1, kNumQueues = 2 };
  using Mac = std::array<uint8_t, 6>;
  using LogFn = std::function<void(const std::string&)>;

  // What survives a snapshot: the backend's packets in flight do not (a network drops packets).
  struct State : QueueIndexes<kNumQueues> {
    bool activated = false;
    Mac mac{};  // informational: a restored device keeps its own (a clone gets a new MAC)
  };

  // Takes ownership of `backend` and makes it non-blocking; an invalid fd means no backend.
  // `log` gets diagnostics (rate-limited where the guest drives them); empty means stderr.
  VirtioNet(UniqueFd backend, const Mac& mac, LogFn log = {});
  ~VirtioNet() override;

  const char* name() const override { return "virtio-net"; }
  uint32_t device_type() const override { return kDeviceType; }
  uint64_t features() const override { return kVirtioFVersion1 | kFeatureMac | kFeatureStatus; }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t, const uint8_t*, uint32_t) override {}  // MAC and status are read-only here
  void Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) override;
  void QueueNotify(uint32_t index) override;
  void Reset() override;

  // Quiesce stops the loop thread (nothing touches guest memory once it returns; the backend's
  // packets wait in the kernel); Unquiesce starts it again. SaveState needs a quiesced or
  // inactive device (VmmError kState otherwise); RestoreState is for a fresh device before
  // Activate, which then continues from the saved queue indexes.
  void Quiesce() override;
  void Unquiesce() override;
  State SaveState();
  void RestoreState(const State& state);
  void SaveState(ByteWriter& out) override;  // net_persist.cc
  void RestoreState(ByteReader& in) override;

  // Tests and fuzzing, on a device quiesced before Activate: runs its loop on the caller's thread
  // for `rounds` non-blocking passes (queue notifications, backend events, re-kicks), so that
  // what the device did with the queues can be looked at deterministically.
  void RunQuiescedLoop(int rounds);

  const Mac& mac() const { return mac_; }
  bool has_backend() const { return backend_.valid(); }

 private:
  void StopLocked();
  void OnNotify();
  void OnBackend(uint32_t events);
  void UpdateWatch();  // backend events: EPOLLIN while an rx chain waits, EPOLLOUT while a tx chain does
  void ProcessTx();
  void ProcessRx();
  // Sends one tx chain to the backend; false if the backend is full (retry on EPOLLOUT).
  bool SendTx(const DescriptorChain& chain);
  void BackendGone(const std::string& why);
  void Broken(const std::string& why);
  void Log(const std::string& msg) { log_limiter_.Log(log_, "virtio-net: ", msg); }

  UniqueFd backend_;
  const Mac mac_;
  LogFn log_;
  bool backend_is_socket_ = false;  // sockets report truncation (MSG_TRUNC); a tap cannot
  QueueKicks kicks_;                // QueueNotify -> loop

  std::mutex mu_;  // lifecycle: Activate/Reset/Quiesce/Unquiesce/SaveState/RestoreState
  std::unique_ptr<EventLoop> loop_;
  bool active_ = false, quiesced_ = false;
  std::optional<State> restored_;

  // Loop-thread state (set up before the thread starts).
  const GuestMemoryAccess* mem_ = nullptr;
  Virtqueue* queues_[kNumQueues] = {};
  VirtioInterrupt* irq_ = nullptr;
  std::optional<DescriptorChain> held_rx_;  // popped, waiting for a packet
  std::optional<DescriptorChain> held_tx_;  // popped, waiting for room in the backend
  bool backend_gone_ = false, broken_ = false;
  uint32_t watched_ = 0;  // backend events registered with the loop (0: not registered)
  LogLimiter log_limiter_{20};
};

}  // namespace stencil
