// virtio-blk (device type 2) backed by a host file: read-only or read-write, with flush.
// Requests are served on the device's own worker thread so a slow disk never stalls a vCPU.
#pragma once
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "../fd.h"
#include "device.h"

namespace stencil {

struct BlockDeviceConfig {
  std::string path;
  bool read_only = false;
  std::string serial;  // returned by VIRTIO_BLK_T_GET_ID (at most 20 bytes)
};

class VirtioBlk : public VirtioDevice {
 public:
  // Opens the backing file; throws VmmError naming it if that fails.
  explicit VirtioBlk(const BlockDeviceConfig& config);
  ~VirtioBlk() override;

  const char* name() const override { return "virtio-blk"; }
  uint32_t device_type() const override { return 2; }
  uint64_t features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {256}; }
  void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t, const uint8_t*, uint32_t) override {}
  void Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) override;
  void QueueNotify(uint32_t index) override;
  void Reset() override;

  void Quiesce() override;
  void Unquiesce() override;
  // Waits until every request notified so far has been served (the fuzz target's step).
  void Drain();
  // blk_persist.cc: queue indexes live in the transport; the device checks that the disk it
  // opened has the saved size and mode (the guest's view of it must not change under it).
  void SaveState(ByteWriter& out) override;
  void RestoreState(ByteReader& in) override;

  uint64_t capacity_sectors() const { return capacity_sectors_; }

 private:
  void WorkerLoop();
  void ProcessQueue();
  // Serves one request; returns the number of bytes written into the chain (data + status).
  uint32_t Serve(const DescriptorChain& chain);

  BlockDeviceConfig config_;
  UniqueFd fd_;
  uint64_t capacity_sectors_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false, stopping_ = false;
  bool quiesced_ = false, busy_ = false;  // busy_: the worker is serving requests
  std::thread worker_;
  const GuestMemoryAccess* mem_ = nullptr;
  Virtqueue* queue_ = nullptr;
  VirtioInterrupt* irq_ = nullptr;
};

}  // namespace stencil
