// Split virtqueue (virtio 1.x, section 2.7) as the device side sees it. Every address and index
// comes from the guest, so each is checked: descriptor indexes against the queue size, buffer
// ranges against guest RAM, chain length against the queue size (no loops).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <stdexcept>
#include <utility>
#include <vector>

#include "../memory.h"

namespace stencil {

struct DescriptorBuffer {
  uint8_t* data;
  uint32_t len;
};

// One available chain: device-readable buffers first, then device-writable ones.
struct DescriptorChain {
  uint16_t head;
  std::vector<DescriptorBuffer> readable;
  std::vector<DescriptorBuffer> writable;
  uint64_t readable_bytes() const;
  uint64_t writable_bytes() const;
  // Gather/scatter helpers across the buffers; return bytes copied.
  uint64_t CopyFromReadable(uint8_t* out, uint64_t len, uint64_t offset = 0) const;
  uint64_t CopyToWritable(const uint8_t* in, uint64_t len, uint64_t offset = 0) const;
};

// The driver broke the virtqueue contract (bad index, bad address, loop, ...). The device marks
// itself NEEDS_RESET rather than touching memory it should not.
class VirtqueueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Virtqueue {
 public:
  explicit Virtqueue(uint16_t max_size) : max_size_(max_size), size_(max_size) {}

  // Transport-facing configuration (written by the driver through virtio-mmio registers).
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  void set_size(uint16_t s) { size_ = s; }
  bool ready() const { return ready_; }
  void set_ready(bool r) { ready_ = r; }
  uint64_t desc_addr = 0, avail_addr = 0, used_addr = 0;

  // True if the configured size and ring addresses are usable (checked when the queue goes ready).
  bool Validate(const GuestMemoryAccess& mem, std::string* why) const;

  // Next available chain, or nullopt if the driver has published nothing new.
  // Throws VirtqueueError on a malformed chain.
  std::optional<DescriptorChain> Pop(const GuestMemoryAccess& mem);
  // Return a chain to the driver with `written` bytes placed in its writable buffers. Their guest
  // ranges are translated once more here: a device may write a buffer long after Pop (a 9p reply,
  // a block read), and a live migration's dirty tracking marks pages when they are translated, so
  // this marks what the device wrote after the writes, never only before them.
  void PushUsed(const GuestMemoryAccess& mem, uint16_t head, uint32_t written);
  // The driver's avail.idx: how many chains it has published since the queue started (wraps).
  uint16_t PublishedIdx(const GuestMemoryAccess& mem) const;
  // Whether the driver wants an interrupt now (VIRTQ_AVAIL_F_NO_INTERRUPT clear).
  bool NeedsInterrupt(const GuestMemoryAccess& mem) const;

  void Reset();
  uint16_t next_avail() const { return next_avail_; }
  uint16_t next_used() const { return next_used_; }
  void RestoreIndexes(uint16_t next_avail, uint16_t next_used) { next_avail_ = next_avail, next_used_ = next_used; }

 private:
  uint16_t max_size_;
  uint16_t size_;
  bool ready_ = false;
  uint16_t next_avail_ = 0;  // free-running, wraps at 2^16 like the ring indexes
  uint16_t next_used_ = 0;
  // The writable guest ranges of each chain popped and not yet used, by head index.
  std::vector<std::vector<std::pair<uint64_t, uint32_t>>> inflight_writable_;
};

}  // namespace stencil
