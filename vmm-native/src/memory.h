// Guest RAM backed by a file on tmpfs (or an anonymous memfd).
//
// A fresh VM maps its file MAP_SHARED so the file *is* the RAM: a paused VM can be turned into
// a template by keeping the file. A clone maps a template's file MAP_PRIVATE, so pages stay
// shared until the clone writes them (copy-on-write). Both use this one class.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fd.h"

namespace stencil {

// One contiguous guest-physical range backed by one host mapping.
struct MemoryRegion {
  uint64_t guest_addr;
  uint64_t size;
  uint8_t* host_addr;
  uint64_t file_offset;
};

enum class MemoryBacking { kTmpfsFile, kMemfd };
enum class MemorySharing { kShared, kPrivateCopyOnWrite };

struct MemoryOptions {
  uint64_t size = 0;
  MemoryBacking backing = MemoryBacking::kTmpfsFile;
  std::string directory = "/dev/shm/stencil";  // for kTmpfsFile
  std::string name;                             // file name inside directory
  MemorySharing sharing = MemorySharing::kShared;
  bool keep_file = false;  // leave the file behind on destruction (templates)
  // kShared only: map the existing file directory/name (exactly `size` bytes) instead of creating
  // one; it is never truncated or removed (a restore onto a template's file with share=on).
  bool open_existing = false;
  // Map over this address range (MAP_FIXED) instead of a new one: a VmShell's reservation that
  // KVM already knows as guest memory, so no memory slot has to be registered on the restore path.
  uint8_t* fixed_address = nullptr;
};

// Anything that turns guest-physical ranges into host pointers (GuestMemory, or a test buffer).
class GuestMemoryAccess {
 public:
  virtual ~GuestMemoryAccess() = default;
  // nullptr if [addr, addr+len) is not entirely inside guest RAM.
  virtual uint8_t* Translate(uint64_t addr, uint64_t len) const = 0;
};

// Guest-physical layout: RAM below the 32-bit MMIO hole, the rest above 4 GiB.
constexpr uint64_t kMmioHoleStart = 0xC0000000ULL;
constexpr uint64_t kMmioHoleEnd = 0x100000000ULL;

class GuestMemory : public GuestMemoryAccess {
 public:
  explicit GuestMemory(const MemoryOptions& options);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  uint64_t size() const { return size_; }
  const std::vector<MemoryRegion>& regions() const { return regions_; }
  const std::string& path() const { return path_; }  // empty for memfd
  // True for a clone's private copy-on-write mapping of a template's file.
  bool copy_on_write() const { return copy_on_write_; }
  // Leave the file behind on destruction (it has become a template's memory).
  void KeepFile() { keep_file_ = true; }
  // The backing file (tmpfs file, template file or memfd), for copying RAM out sparsely.
  int fd() const { return fd_.get(); }
  // The one host mapping of all guest RAM, file offset 0 at base().
  const uint8_t* base() const { return base_; }

  // Host pointer for [addr, addr+len) if it lies entirely in one region, else nullptr.
  // All guest-controlled addresses go through here: nothing is ever dereferenced unchecked.
  // While dirty tracking is on, the range's pages are marked dirty (see StartDirtyTracking).
  uint8_t* Translate(uint64_t addr, uint64_t len) const override;
  // RAM by file offset, for receiving a migration stream: nullptr unless [offset, offset+len) is in RAM.
  uint8_t* AtOffset(uint64_t offset, uint64_t len) { return offset <= size_ && len <= size_ - offset ? base_ + offset : nullptr; }

  // Live migration: devices write guest RAM through host pointers, which KVM's dirty log never
  // sees, so while tracking is on every Translate marks its pages (reads too: a device cannot say
  // which ranges it will write, and a page sent twice costs less than one missed).
  void StartDirtyTracking();
  void StopDirtyTracking() { tracking_.store(false, std::memory_order_release); }
  // ORs the pages marked since the last call into `bitmap` (bit i: the page at file offset
  // i * 4096; sized by the caller to cover all of RAM) and clears the marks.
  void CollectDirty(std::vector<uint64_t>& bitmap) const;

  // Copy helpers that throw VmmError naming the bad range (used while building boot state).
  void Write(uint64_t addr, const void* data, uint64_t len);
  void Read(uint64_t addr, void* out, uint64_t len) const;

  // Highest guest-physical end address of RAM below the MMIO hole.
  uint64_t LowMemoryEnd() const;

 private:
  uint64_t size_;
  std::string path_;
  bool keep_file_;
  bool copy_on_write_ = false;
  UniqueFd fd_;
  uint8_t* base_ = nullptr;  // one host mapping of the whole file
  std::vector<MemoryRegion> regions_;
  // One bit per page, allocated at the first StartDirtyTracking and kept until destruction (a
  // device thread may be inside Translate when tracking stops).
  std::unique_ptr<std::atomic<uint64_t>[]> dirty_;
  std::atomic<bool> tracking_{false};
};

constexpr uint64_t kGuestPageSize = 4096;
// Words of a one-bit-per-page bitmap covering `bytes` of RAM.
inline size_t DirtyBitmapWords(uint64_t bytes) { return static_cast<size_t>((bytes / kGuestPageSize + 63) / 64); }

// Guest-physical regions of `size` bytes of RAM mapped at `base`: [0, hole) and [4 GiB, ...).
std::vector<MemoryRegion> SplitAtMmioHole(uint64_t size, uint8_t* base);

// For tests: memory laid out like GuestMemory but over a caller-owned buffer.
uint8_t* TranslateIn(const std::vector<MemoryRegion>& regions, uint64_t addr, uint64_t len);

}  // namespace stencil
