#include "blk.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "../error.h"
#include "../vmm_thread.h"

namespace stencil {

namespace {

constexpr uint64_t kSectorSize = 512;
constexpr uint64_t kFeatureSegMax = 1ULL << 2, kFeatureReadOnly = 1ULL << 5, kFeatureBlockSize = 1ULL << 6,
                   kFeatureFlush = 1ULL << 9;
constexpr uint32_t kTypeIn = 0, kTypeOut = 1, kTypeFlush = 4, kTypeGetId = 8;
constexpr uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupported = 2;
constexpr uint32_t kSegMax = 126;  // queue size minus header and status descriptors
constexpr uint32_t kIdBytes = 20;

struct RequestHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};

}  // namespace

VirtioBlk::VirtioBlk(const BlockDeviceConfig& config) : config_(config) {
  fd_.reset(open(config_.path.c_str(), (config_.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!fd_.valid()) throw VmmError(ErrorCode::kInvalidArgument, WithErrno("block device file " + config_.path));
  struct stat st;
  if (fstat(fd_.get(), &st) != 0) throw VmmError(ErrorCode::kInvalidArgument, WithErrno("fstat " + config_.path));
  if (!S_ISREG(st.st_mode)) throw VmmError(ErrorCode::kInvalidArgument, "block device " + config_.path + " is not a regular file");
  if (st.st_size % kSectorSize != 0)
    throw VmmError(ErrorCode::kInvalidArgument, "block device " + config_.path + " size " + std::to_string(st.st_size) +
                                                    " is not a multiple of 512");
  capacity_sectors_ = static_cast<uint64_t>(st.st_size) / kSectorSize;
  if (config_.serial.size() > kIdBytes)
    throw VmmError(ErrorCode::kInvalidArgument, "block device serial '" + config_.serial + "' is longer than 20 bytes");
}

VirtioBlk::~VirtioBlk() { Reset(); }

uint64_t VirtioBlk::features() const {
  uint64_t f = kVirtioFVersion1 | kFeatureSegMax | kFeatureBlockSize | kFeatureFlush;
  if (config_.read_only) f |= kFeatureReadOnly;
  return f;
}

void VirtioBlk::ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) {
  // struct virtio_blk_config: capacity (u64) @0, size_max (u32) @8, seg_max (u32) @12,
  // geometry @16, blk_size (u32) @20.
  uint8_t cfg[24] = {};
  std::memcpy(cfg, &capacity_sectors_, 8);
  std::memcpy(cfg + 12, &kSegMax, 4);
  uint32_t blk_size = kSectorSize;
  std::memcpy(cfg + 20, &blk_size, 4);
  for (uint32_t i = 0; i < len; i++) data[i] = offset + i < sizeof cfg ? cfg[offset + i] : 0;
}

void VirtioBlk::Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) {
  Reset();
  mem_ = &mem;
  queue_ = &queues.at(0);
  irq_ = &irq;
  stopping_ = false;
  // Serve anything already published: a notify the worker had not taken when it was quiesced is
  // not in the saved state, and the restored guest would wait for that request forever.
  pending_ = true;
  worker_ = StartVmmThread("virtio-blk", ThreadRole::kBlockIo, [this] { WorkerLoop(); });
}

void VirtioBlk::Reset() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  mem_ = nullptr, queue_ = nullptr, irq_ = nullptr;
  pending_ = false;
}

void VirtioBlk::QueueNotify(uint32_t index) {
  if (index != 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = true;
  }
  cv_.notify_all();  // all: Quiesce waits on the same condition variable
}

void VirtioBlk::Quiesce() {
  std::unique_lock<std::mutex> lock(mu_);
  quiesced_ = true;
  cv_.wait(lock, [&] { return !busy_; });
}

void VirtioBlk::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !busy_ && (!pending_ || quiesced_ || stopping_); });
}

void VirtioBlk::Unquiesce() {
  std::lock_guard<std::mutex> lock(mu_);
  quiesced_ = false;
  cv_.notify_all();
}

void VirtioBlk::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || (pending_ && !quiesced_); });
    if (stopping_) return;
    pending_ = false;
    busy_ = true;
    lock.unlock();
    ProcessQueue();
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

void VirtioBlk::ProcessQueue() {
  bool used = false;
  try {
    while (auto chain = queue_->Pop(*mem_)) {
      queue_->PushUsed(*mem_, chain->head, Serve(*chain));
      used = true;
    }
  } catch (const VirtqueueError&) {
    irq_->SignalNeedsReset();
    return;
  }
  if (used && queue_->NeedsInterrupt(*mem_)) irq_->SignalUsedBuffer();
}

uint32_t VirtioBlk::Serve(const DescriptorChain& chain) {
  // The last writable byte is the status; everything between header and status is data.
  if (chain.writable.empty() || chain.writable.back().len < 1) return 0;  // nowhere to put a status
  uint8_t* status = chain.writable.back().data + chain.writable.back().len - 1;
  RequestHeader hdr;
  if (chain.CopyFromReadable(reinterpret_cast<uint8_t*>(&hdr), sizeof hdr) != sizeof hdr) {
    *status = kStatusIoErr;
    return 1;
  }
  // Data: for a write, the readable buffers after the header; otherwise the writable buffers
  // before the status byte.
  std::vector<DescriptorBuffer> data;
  if (hdr.type == kTypeOut) {
    uint64_t skip = sizeof hdr;
    for (auto b : chain.readable) {
      if (skip >= b.len) { skip -= b.len; continue; }
      data.push_back({b.data + skip, static_cast<uint32_t>(b.len - skip)});
      skip = 0;
    }
  } else {
    for (size_t i = 0; i < chain.writable.size(); i++) {
      auto b = chain.writable[i];
      if (i + 1 == chain.writable.size()) b.len -= 1;  // minus the status byte
      if (b.len) data.push_back(b);
    }
  }
  uint64_t bytes = 0;
  for (auto& b : data) bytes += b.len;

  auto in_range = [&] {
    return bytes % kSectorSize == 0 && hdr.sector <= capacity_sectors_ &&
           bytes / kSectorSize <= capacity_sectors_ - hdr.sector;
  };
  uint8_t result = kStatusOk;
  uint32_t written = 1;
  switch (hdr.type) {
    case kTypeIn:
    case kTypeOut: {
      bool is_write = hdr.type == kTypeOut;
      if (!in_range()) { result = kStatusIoErr; break; }
      if (is_write && config_.read_only) { result = kStatusIoErr; break; }
      off_t off = static_cast<off_t>(hdr.sector * kSectorSize);
      for (auto& b : data) {
        ssize_t n = is_write ? pwrite(fd_.get(), b.data, b.len, off) : pread(fd_.get(), b.data, b.len, off);
        if (n != static_cast<ssize_t>(b.len)) { result = kStatusIoErr; break; }
        off += b.len;
      }
      if (!is_write && result == kStatusOk) written += static_cast<uint32_t>(bytes);
      break;
    }
    case kTypeFlush:
      if (!config_.read_only && fdatasync(fd_.get()) != 0) result = kStatusIoErr;
      break;
    case kTypeGetId: {
      uint8_t id[kIdBytes] = {};
      std::memcpy(id, config_.serial.data(), config_.serial.size());
      uint64_t n = 0;
      for (auto& b : data) {
        uint64_t take = std::min<uint64_t>(b.len, kIdBytes - n);
        std::memcpy(b.data, id + n, take);
        n += take;
        if (n == kIdBytes) break;
      }
      written += static_cast<uint32_t>(n);
      break;
    }
    default:
      result = kStatusUnsupported;
  }
  *status = result;
  return written;
}

}  // namespace stencil
