#include "queue.h"

#include <atomic>
#include <cstring>

#include "../error.h"

namespace stencil {

namespace {

constexpr uint16_t kDescFNext = 1, kDescFWrite = 2, kDescFIndirect = 4;
constexpr uint16_t kAvailFNoInterrupt = 1;

struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Desc) == 16, "virtq_desc is 16 bytes");

template <typename T>
T Load(const GuestMemoryAccess& mem, uint64_t addr, const char* what) {
  uint8_t* p = mem.Translate(addr, sizeof(T));
  if (!p) throw VirtqueueError(std::string(what) + " at guest address " + Hex(addr) + " is outside RAM");
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename T>
void Store(const GuestMemoryAccess& mem, uint64_t addr, T v, const char* what) {
  uint8_t* p = mem.Translate(addr, sizeof(T));
  if (!p) throw VirtqueueError(std::string(what) + " at guest address " + Hex(addr) + " is outside RAM");
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace

uint64_t DescriptorChain::readable_bytes() const {
  uint64_t n = 0;
  for (auto& b : readable) n += b.len;
  return n;
}

uint64_t DescriptorChain::writable_bytes() const {
  uint64_t n = 0;
  for (auto& b : writable) n += b.len;
  return n;
}

uint64_t DescriptorChain::CopyFromReadable(uint8_t* out, uint64_t len, uint64_t offset) const {
  uint64_t done = 0;
  for (auto& b : readable) {
    if (done == len) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(b.len - offset, len - done);
    std::memcpy(out + done, b.data + offset, n);
    done += n;
    offset = 0;
  }
  return done;
}

uint64_t DescriptorChain::CopyToWritable(const uint8_t* in, uint64_t len, uint64_t offset) const {
  uint64_t done = 0;
  for (auto& b : writable) {
    if (done == len) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(b.len - offset, len - done);
    std::memcpy(b.data + offset, in + done, n);
    done += n;
    offset = 0;
  }
  return done;
}

bool Virtqueue::Validate(const GuestMemoryAccess& mem, std::string* why) const {
  if (size_ == 0 || size_ > max_size_ || (size_ & (size_ - 1)) != 0) {
    *why = "queue size " + std::to_string(size_) + " is not a power of two in 1.." + std::to_string(max_size_);
    return false;
  }
  if (desc_addr % 16 || avail_addr % 2 || used_addr % 4) {
    *why = "ring addresses are misaligned";
    return false;
  }
  if (!mem.Translate(desc_addr, uint64_t(size_) * 16) || !mem.Translate(avail_addr, 6 + uint64_t(size_) * 2) ||
      !mem.Translate(used_addr, 6 + uint64_t(size_) * 8)) {
    *why = "a ring lies outside guest RAM";
    return false;
  }
  return true;
}

std::optional<DescriptorChain> Virtqueue::Pop(const GuestMemoryAccess& mem) {
  uint16_t avail_idx = PublishedIdx(mem);
  if (avail_idx == next_avail_) return std::nullopt;
  if (static_cast<uint16_t>(avail_idx - next_avail_) > size_)
    throw VirtqueueError("avail.idx jumped by more than the queue size");
  std::atomic_thread_fence(std::memory_order_acquire);  // read ring entries after the index

  uint16_t head = Load<uint16_t>(mem, avail_addr + 4 + uint64_t(next_avail_ % size_) * 2, "avail.ring entry");
  if (head >= size_) throw VirtqueueError("descriptor index " + std::to_string(head) + " >= queue size");

  DescriptorChain chain{head, {}, {}};
  std::vector<std::pair<uint64_t, uint32_t>> writable_ranges;
  uint16_t index = head;
  for (uint32_t count = 0;; count++) {
    if (count >= size_) throw VirtqueueError("descriptor chain longer than the queue (a loop?)");
    Desc d = Load<Desc>(mem, desc_addr + uint64_t(index) * 16, "descriptor");
    if (d.flags & kDescFIndirect) throw VirtqueueError("indirect descriptor, but VIRTIO_F_INDIRECT_DESC was not offered");
    uint8_t* p = d.len ? mem.Translate(d.addr, d.len) : nullptr;
    if (d.len && !p)
      throw VirtqueueError("buffer " + Hex(d.addr) + "+" + std::to_string(d.len) + " is outside RAM");
    if (d.flags & kDescFWrite) {
      chain.writable.push_back({p, d.len});
      if (d.len) writable_ranges.emplace_back(d.addr, d.len);
    } else {
      if (!chain.writable.empty()) throw VirtqueueError("device-readable descriptor after a writable one");
      chain.readable.push_back({p, d.len});
    }
    if (!(d.flags & kDescFNext)) break;
    if (d.next >= size_) throw VirtqueueError("next index " + std::to_string(d.next) + " >= queue size");
    index = d.next;
  }
  next_avail_++;
  if (inflight_writable_.size() < size_) inflight_writable_.resize(size_);
  inflight_writable_[head] = std::move(writable_ranges);
  return chain;
}

void Virtqueue::PushUsed(const GuestMemoryAccess& mem, uint16_t head, uint32_t written) {
  if (head < inflight_writable_.size()) {
    for (const auto& [addr, len] : inflight_writable_[head]) mem.Translate(addr, len);
    inflight_writable_[head].clear();
  }
  uint64_t elem = used_addr + 4 + uint64_t(next_used_ % size_) * 8;
  Store<uint32_t>(mem, elem, head, "used.ring id");
  Store<uint32_t>(mem, elem + 4, written, "used.ring len");
  next_used_++;
  std::atomic_thread_fence(std::memory_order_release);  // entry visible before the index
  Store<uint16_t>(mem, used_addr + 2, next_used_, "used.idx");
}

uint16_t Virtqueue::PublishedIdx(const GuestMemoryAccess& mem) const {
  return Load<uint16_t>(mem, avail_addr + 2, "avail.idx");
}

bool Virtqueue::NeedsInterrupt(const GuestMemoryAccess& mem) const {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint16_t flags = Load<uint16_t>(mem, avail_addr, "avail.flags");
  return !(flags & kAvailFNoInterrupt);
}

void Virtqueue::Reset() {
  size_ = max_size_;
  ready_ = false;
  desc_addr = avail_addr = used_addr = 0;
  next_avail_ = next_used_ = 0;
  inflight_writable_.clear();
}

}  // namespace stencil
