#include "memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "error.h"

namespace stencil {

namespace {

constexpr uint64_t kPageSize = 4096;

std::string HumanSize(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, u++;
  char buf[32];
  snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

void ValidateSize(uint64_t size) {
  if (size == 0) throw VmmError(ErrorCode::kInvalidArgument, "memory size must be greater than 0");
  if (size % kPageSize != 0)
    throw VmmError(ErrorCode::kInvalidArgument,
                   "memory size " + std::to_string(size) + " is not a multiple of the page size (4096)");
  if (size < (16ULL << 20))
    throw VmmError(ErrorCode::kInvalidArgument, "memory size " + HumanSize(size) + " is below the minimum of 16 MiB");
  long pages = sysconf(_SC_PHYS_PAGES);
  uint64_t host = pages > 0 ? static_cast<uint64_t>(pages) * kPageSize : 0;
  if (host && size > host)
    throw VmmError(ErrorCode::kInvalidArgument,
                   "memory size " + HumanSize(size) + " exceeds this host's RAM (" + HumanSize(host) + ")");
}

}  // namespace

uint8_t* TranslateIn(const std::vector<MemoryRegion>& regions, uint64_t addr, uint64_t len) {
  for (const auto& r : regions) {
    if (addr >= r.guest_addr && addr - r.guest_addr <= r.size && len <= r.size - (addr - r.guest_addr))
      return r.host_addr + (addr - r.guest_addr);
  }
  return nullptr;
}

GuestMemory::GuestMemory(const MemoryOptions& options)
    : size_(options.size), keep_file_(options.keep_file) {
  const bool opening_template = options.sharing == MemorySharing::kPrivateCopyOnWrite;
  // An existing file is mapped as it is: never sized, truncated or removed here.
  const bool existing_file = opening_template || options.open_existing;
  if (!existing_file) ValidateSize(size_);
  if (options.open_existing && (options.backing != MemoryBacking::kTmpfsFile || opening_template))
    throw VmmError(ErrorCode::kInvalidArgument, "open_existing needs a shared mapping of a RAM file");

  if (options.backing == MemoryBacking::kMemfd) {
    fd_.reset(memfd_create("stencil-guest-ram", MFD_CLOEXEC));
    if (!fd_.valid()) throw VmmError(ErrorCode::kMemoryBacking, WithErrno("memfd_create for guest RAM"));
  } else {
    const std::string& dir = options.directory;
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      throw VmmError(ErrorCode::kMemoryBacking, "guest RAM directory " + dir + " does not exist or is not a directory");
    if (options.name.empty() || options.name.find('/') != std::string::npos)
      throw VmmError(ErrorCode::kInvalidArgument, "guest RAM file name '" + options.name + "' is empty or contains '/'");
    path_ = dir + "/" + options.name;
    if (opening_template) {
      fd_.reset(open(path_.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd_.valid()) throw VmmError(ErrorCode::kMemoryBacking, WithErrno("opening template RAM " + path_));
      if (fstat(fd_.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) != size_)
        throw VmmError(ErrorCode::kMemoryBacking, "template RAM " + path_ + " does not have the expected size " +
                                                      std::to_string(size_));
      keep_file_ = true;  // never delete a template's file from a clone
      copy_on_write_ = true;
    } else if (options.open_existing) {
      fd_.reset(open(path_.c_str(), O_RDWR | O_CLOEXEC));
      if (!fd_.valid()) throw VmmError(ErrorCode::kMemoryBacking, WithErrno("opening guest RAM file " + path_ + " to share it"));
      if (fstat(fd_.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) != size_)
        throw VmmError(ErrorCode::kMemoryBacking, "guest RAM file " + path_ + " does not have the expected size " +
                                                      std::to_string(size_));
      keep_file_ = true;
    } else {
      // tmpfs files are sparse: check free space now rather than let the guest die on SIGBUS
      // the first time it touches a page the filesystem cannot provide.
      struct statvfs vfs;
      if (statvfs(dir.c_str(), &vfs) != 0)
        throw VmmError(ErrorCode::kMemoryBacking, WithErrno("statvfs " + dir));
      uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
      if (avail < size_)
        throw VmmError(ErrorCode::kMemoryBacking, "guest RAM directory " + dir + " has only " + HumanSize(avail) +
                                                      " free, the VM needs " + HumanSize(size_));
      fd_.reset(open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!fd_.valid()) throw VmmError(ErrorCode::kMemoryBacking, WithErrno("creating guest RAM file " + path_));
    }
  }

  auto fail = [&](const std::string& what) {
    int err = errno;
    if (!path_.empty() && !existing_file) unlink(path_.c_str());
    throw VmmError(ErrorCode::kMemoryBacking, WithErrno(what, err));
  };
  if (!existing_file && ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0)
    fail("sizing guest RAM to " + std::to_string(size_) + " bytes");

  int prot = PROT_READ | PROT_WRITE;
  int flags = (opening_template ? MAP_PRIVATE : MAP_SHARED) | MAP_NORESERVE | (options.fixed_address ? MAP_FIXED : 0);
  void* p = mmap(options.fixed_address, size_, prot, flags, fd_.get(), 0);
  if (p == MAP_FAILED) fail("mapping " + HumanSize(size_) + " of guest RAM");
  base_ = static_cast<uint8_t*>(p);
  // Where the host runs KSM, identical pages a clone has written may be merged with other clones'
  // (README, Threat model). KSM merges only private anonymous pages: a shared RAM file never is.
  madvise(base_, size_, MADV_MERGEABLE);
  // Processes the embedding process spawns (the shim runs mount(8) and friends) must not inherit
  // guest RAM, as QEMU marks its RAM: fork copies a private mapping's page tables and
  // write-protects a clone's copied pages under its running vCPUs, and every later guest or
  // device write to them faults and copies once more. Nor does guest RAM go into the VMM's core
  // dump (as QEMU's dump-guest-core=off): a crashing shim would otherwise write its pod's memory,
  // the tenant's data, wherever the host keeps core dumps, and all of it (a clone's whole mapping
  // once it has written one page). Guest memory is saved on purpose through snapshots.
  for (auto [advice, what] : {std::pair{MADV_DONTFORK, "excluding guest RAM from forks (madvise MADV_DONTFORK)"},
                              std::pair{MADV_DONTDUMP, "excluding guest RAM from core dumps (madvise MADV_DONTDUMP)"}}) {
    if (madvise(base_, size_, advice) == 0) continue;
    int err = errno;
    if (!options.fixed_address) munmap(base_, size_);  // a reservation stays its owner's
    base_ = nullptr;
    errno = err;
    fail(what);
  }

  regions_ = SplitAtMmioHole(size_, base_);
}

std::vector<MemoryRegion> SplitAtMmioHole(uint64_t size, uint8_t* base) {
  // [0, hole) and [4 GiB, ...) map consecutive file ranges.
  std::vector<MemoryRegion> regions;
  uint64_t low = size < kMmioHoleStart ? size : kMmioHoleStart;
  regions.push_back({0, low, base, 0});
  if (size > low) regions.push_back({kMmioHoleEnd, size - low, base + low, low});
  return regions;
}

GuestMemory::~GuestMemory() {
  if (base_) munmap(base_, size_);
  if (!path_.empty() && !keep_file_) unlink(path_.c_str());
}

uint8_t* GuestMemory::Translate(uint64_t addr, uint64_t len) const {
  uint8_t* p = TranslateIn(regions_, addr, len);
  if (p && tracking_.load(std::memory_order_acquire)) {
    uint64_t offset = static_cast<uint64_t>(p - base_);
    uint64_t last = (offset + (len ? len - 1 : 0)) / kPageSize;
    for (uint64_t page = offset / kPageSize; page <= last; page++)
      dirty_[page / 64].fetch_or(1ULL << (page % 64), std::memory_order_relaxed);
  }
  return p;
}

void GuestMemory::StartDirtyTracking() {
  if (!dirty_) {
    size_t words = DirtyBitmapWords(size_);
    dirty_.reset(new std::atomic<uint64_t>[words]);
    for (size_t i = 0; i < words; i++) dirty_[i].store(0, std::memory_order_relaxed);
  }
  tracking_.store(true, std::memory_order_release);
}

void GuestMemory::CollectDirty(std::vector<uint64_t>& bitmap) const {
  if (!dirty_) return;
  size_t words = DirtyBitmapWords(size_);
  if (bitmap.size() < words) bitmap.resize(words, 0);
  for (size_t i = 0; i < words; i++) bitmap[i] |= dirty_[i].exchange(0, std::memory_order_acq_rel);
}

void GuestMemory::Write(uint64_t addr, const void* data, uint64_t len) {
  uint8_t* p = Translate(addr, len);
  if (!p)
    throw VmmError(ErrorCode::kInvalidArgument, "guest range " + Hex(addr) + "+" + std::to_string(len) +
                                                    " is outside guest RAM");
  std::memcpy(p, data, len);
}

void GuestMemory::Read(uint64_t addr, void* out, uint64_t len) const {
  const uint8_t* p = Translate(addr, len);
  if (!p)
    throw VmmError(ErrorCode::kInvalidArgument, "guest range " + Hex(addr) + "+" + std::to_string(len) +
                                                    " is outside guest RAM");
  std::memcpy(out, p, len);
}

uint64_t GuestMemory::LowMemoryEnd() const { return regions_.front().size; }

}  // namespace stencil
