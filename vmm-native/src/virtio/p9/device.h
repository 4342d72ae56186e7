// virtio-9p (device type 9): shares one host directory with the guest over 9P2000.L.
//
//   guest: mount -t 9p -o trans=virtio,version=9p2000.L,msize=N <tag> /mnt
//
// Feature VIRTIO_9P_MOUNT_TAG (bit 0); config space = le16 tag_len + tag bytes; one request queue.
// QueueNotify (a vCPU thread, under the transport lock) only wakes the device's worker thread;
// the worker pops chains, gathers each request from the readable buffers, runs the p9::Server,
// scatters the reply into the writable buffers, pushes the used entry and raises the interrupt.
// Requests are served one at a time, in order. A malformed chain marks the device NEEDS_RESET.
#pragma once
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "../device.h"
#include "server.h"

namespace stencil {

constexpr uint64_t kVirtio9pFMountTag = 1ULL << 0;

class VirtioP9 : public VirtioDevice {
 public:
  static constexpr size_t kMaxTagLength = 64;

  // Throws VmmError(kInvalidArgument) naming the share if the tag is invalid or host_path is not
  // an accessible directory.
  VirtioP9(const std::string& tag, const std::string& host_path, bool read_only);
  ~VirtioP9() override;

  const char* name() const override { return "virtio-9p"; }
  uint32_t device_type() const override { return 9; }
  uint64_t features() const override { return kVirtioFVersion1 | kVirtio9pFMountTag; }
  std::vector<uint16_t> queue_max_sizes() const override { return {256}; }
  void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t, const uint8_t*, uint32_t) override {}
  void Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) override;
  void QueueNotify(uint32_t index) override;
  void Reset() override;
  void Quiesce() override;
  void Unquiesce() override;
  // device_persist.cc: the State below, encoded.
  void SaveState(ByteWriter& out) override;
  void RestoreState(ByteReader& in) override;

  const std::string& tag() const { return tag_; }
  bool read_only() const { return read_only_; }
  // Tag rules: 1..kMaxTagLength bytes of [A-Za-z0-9_.-]. Empty string if valid, else why not.
  static std::string CheckTag(const std::string& tag);

  // Everything needed to resume serving after save/restore. Take it only while the device is
  // quiescent (VM paused); SaveState waits for the request being served, if any.
  struct State {
    bool active = false;
    uint16_t next_avail = 0, next_used = 0;
    p9::Server::State server;
  };
  State SaveState();
  // Re-creates the fids (see p9::Server::RestoreState) and the queue indexes, applied now if the
  // device is active or at the next Activate. Returns the number of fids that had to be dropped.
  size_t RestoreState(const State& state);

  uint64_t requests_served() const { return requests_served_; }

 private:
  void StopWorker();
  void WorkerLoop();
  void ServeQueue();  // pops and answers until the queue is empty (worker thread)

  std::string tag_;
  std::vector<uint8_t> config_;
  bool read_only_;

  std::mutex serve_mu_;  // held while one request is served, and by Save/RestoreState
  p9::Server server_;
  const GuestMemoryAccess* mem_ = nullptr;
  Virtqueue* queue_ = nullptr;
  VirtioInterrupt* irq_ = nullptr;
  std::optional<std::pair<uint16_t, uint16_t>> pending_indexes_;
  bool broken_ = false;  // a VirtqueueError happened: serve nothing until reset
  std::atomic<uint64_t> requests_served_{0};

  std::mutex mu_;  // worker wake-up
  std::condition_variable cv_;
  bool kicked_ = false;
  bool stop_ = false;
  bool quiesced_ = false;  // VM paused: the worker serves nothing until Unquiesce
  std::thread worker_;
};

}  // namespace stencil
