// virtio-vsock (device type 19) in "hybrid" mode: guest AF_VSOCK stream sockets are relayed to
// host AF_UNIX sockets by the VMM itself (no vhost-vsock). See muxer.h for the host-side
// conventions (<uds> for host-initiated CONNECT, <uds>_<port> for guest-initiated connections).
//
// Threading: QueueNotify (vCPU thread, under the transport lock) only sets a bit and writes an
// eventfd. All queue processing and socket I/O happen on the device's event-loop thread, which
// runs from Activate() to Reset()/destruction. VirtioInterrupt is signalled from that thread.
//
// Life cycle of the host socket <uds>: bound by the constructor (so configuration errors surface
// when the VM is created and host clients can connect before the guest driver is up; they are
// accepted once it is), closed and unlinked by Reset() and the destructor, bound again by a
// later Activate().
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "../../event_loop.h"
#include "../../fd.h"
#include "../../log_limiter.h"
#include "../device.h"
#include "../queue_kicks.h"
#include "muxer.h"

namespace stencil {

class VirtioVsock : public VirtioDevice {
 public:
  static constexpr uint32_t kDeviceType = 19;
  static constexpr uint64_t kFeatureStream = 1ULL << 0;  // VIRTIO_VSOCK_F_STREAM
  enum Queue : uint32_t { kRxQueue = 0, kTxQueue = 1, kEventQueue = 2, kNumQueues = 3 };

  // What survives a snapshot. Connections do not: host sockets cannot be saved, so a restored
  // device starts with none and sends the guest VIRTIO_VSOCK_EVENT_TRANSPORT_RESET once active,
  // which makes the guest drop its connections (listening sockets survive) and re-read guest_cid.
  struct State : QueueIndexes<kNumQueues> {
    uint64_t guest_cid = 0;
    bool activated = false;
    // The next host-side port for host-initiated connections (0: none made yet). A restored
    // device goes on from here, so the template's guest sockets, which linger after the
    // transport reset, are never confused with the clone's connections.
    uint32_t next_local_port = 0;
  };

  // Throws VmmError(kInvalidArgument) naming vsock.guestCid or vsock.udsPath for bad values
  // (reserved CID, path too long, directory missing, path in use by a live socket).
  VirtioVsock(uint64_t guest_cid, vsock::MuxerOptions options);
  // The CID range: 3..4294967294 (0-2 are reserved, 0xffffffff means "any").
  static void ValidateGuestCid(uint64_t guest_cid);
  ~VirtioVsock() override;

  const char* name() const override { return "virtio-vsock"; }
  uint32_t device_type() const override { return kDeviceType; }
  uint64_t features() const override { return kVirtioFVersion1 | kFeatureStream; }
  std::vector<uint16_t> queue_max_sizes() const override { return {256, 256, 64}; }
  void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t, const uint8_t*, uint32_t) override {}  // guest_cid is read-only
  void Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) override;
  void QueueNotify(uint32_t index) override;
  void Reset() override;

  // Any thread. Drops every connection (closing the host sockets) and puts
  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (as soon as the guest has a buffer
  // there; before activation, once activated). Needed after a snapshot restore.
  void SendTransportReset();

  // Snapshot support. Pause() stops guest-memory and socket processing (host sockets stay open,
  // their data waits in the kernel); Resume() continues. SaveState() needs a paused or inactive
  // device (VmmError kState otherwise). RestoreState() is for a fresh device before Activate():
  // the saved queue indexes are applied at activation, followed by a transport reset event. The
  // configured guest CID wins over the saved one (a clone may get a new CID).
  void Pause();
  void Resume();
  State SaveState();
  void RestoreState(const State& state);
  // The VirtioDevice view of the above (device_persist.cc).
  void Quiesce() override { Pause(); }
  void Unquiesce() override { Resume(); }
  void SaveState(ByteWriter& out) override;
  void RestoreState(ByteReader& in) override;

  uint64_t guest_cid() const { return guest_cid_; }
  const std::string& uds_path() const { return options_.uds_path; }
  // Live connections (for tests and diagnostics; waits for the loop thread).
  size_t connection_count();

 private:
  void Bind();
  void Unbind();
  void StopLocked();  // stop the thread, close every socket; with mu_ held
  void OnNotify();
  void ProcessTx();
  void ProcessRx();
  void ProcessEvents();
  void ScheduleRx();
  void HandleTxChain(const DescriptorChain& chain);
  void Broken(const std::string& why);
  void Log(const std::string& msg);

  const uint64_t guest_cid_;
  vsock::MuxerOptions options_;
  UniqueFd listener_;
  QueueKicks kicks_;  // QueueNotify -> loop

  std::mutex mu_;  // lifecycle: Activate/Reset/Pause/Resume/SaveState/SendTransportReset
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<vsock::Muxer> muxer_;
  bool active_ = false, paused_ = false;
  std::optional<State> restored_;
  bool reset_event_pending_ = false;  // loop-thread state once active
  // A restored guest's CID before it resumed here (0: none or unchanged). Packets it had queued
  // under that CID before handling the transport reset are dropped without a log line each.
  uint64_t stale_cid_ = 0;
  // Set from delivering a transport reset until the guest has handled it. Linux handles the
  // event in a work item of its own: it re-reads guest_cid, resets every connected socket, and
  // only then gives the event buffer back (avail.idx moves) and kicks the event queue. A host
  // connection request delivered before that is answered under a stale CID, or is established
  // and then reset with the rest, silently: the host would wait forever for its first reply. So
  // rx waits until the event queue's avail.idx has moved past `reset_avail_idx_` (loop thread).
  bool awaiting_reset_ack_ = false;
  uint16_t reset_avail_idx_ = 0;

  // Loop-thread state (set up before the thread starts).
  const GuestMemoryAccess* mem_ = nullptr;
  Virtqueue* queues_[kNumQueues] = {};
  VirtioInterrupt* irq_ = nullptr;
  std::optional<DescriptorChain> held_rx_;  // popped rx chain not yet filled
  bool rx_posted_ = false;
  bool broken_ = false;
  std::vector<uint8_t> scratch_;

  LogLimiter log_limiter_{20};
};

}  // namespace stencil
