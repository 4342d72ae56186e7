#include "memory_copy.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "../error.h"
#include "../fd.h"
#include "../memory.h"

namespace stencil {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxRun = 1ULL << 20;  // write non-zero pages in runs of at most 1 MiB

void WriteAll(int fd, const uint8_t* data, uint64_t len, uint64_t offset, const std::string& path) {
  while (len > 0) {
    ssize_t n = pwrite(fd, data, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw VmmError(ErrorCode::kSnapshot, WithErrno("writing guest RAM to " + path));
    data += n, len -= static_cast<uint64_t>(n), offset += static_cast<uint64_t>(n);
  }
}

// The data ranges of guest RAM: its backing file's where the file's pages are the guest's
// (shared mapping), all of RAM for a copy-on-write clone (its written pages are private to the
// mapping, invisible in the file).
std::vector<std::pair<uint64_t, uint64_t>> DataExtents(const GuestMemory& memory) {
  if (memory.copy_on_write()) return {{0, memory.size()}};
  return FileDataExtents(memory.fd(), memory.size());
}

}  // namespace

bool IsZeroPage(const uint8_t* p) {
  const auto* words = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < kPage / sizeof(uint64_t); i++)
    if (words[i]) return false;
  return true;
}

std::vector<std::pair<uint64_t, uint64_t>> FileDataExtents(int fd, uint64_t size) {
  std::vector<std::pair<uint64_t, uint64_t>> extents;
  uint64_t pos = 0;
  while (pos < size) {
    off_t data = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data past pos
      if (errno == EINVAL) return {{pos, size}};  // no SEEK_DATA here: scan everything left
      throw VmmError(ErrorCode::kSnapshot, WithErrno("finding guest RAM data (SEEK_DATA)"));
    }
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) throw VmmError(ErrorCode::kSnapshot, WithErrno("finding guest RAM holes (SEEK_HOLE)"));
    uint64_t start = static_cast<uint64_t>(data) & ~(kPage - 1);
    uint64_t end = static_cast<uint64_t>(hole) < size ? static_cast<uint64_t>(hole) : size;
    if (start >= end) break;
    extents.emplace_back(start, end);
    pos = end;
  }
  return extents;
}

MemoryCopyStats CopyGuestMemory(const GuestMemory& memory, const std::string& path) {
  UniqueFd out(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out.valid()) throw VmmError(ErrorCode::kSnapshot, WithErrno("creating snapshot memory file " + path));
  MemoryCopyStats stats;
  try {
    if (ftruncate(out.get(), static_cast<off_t>(memory.size())) != 0)
      throw VmmError(ErrorCode::kSnapshot, WithErrno("sizing " + path + " to " + std::to_string(memory.size()) + " bytes"));
    const uint8_t* base = memory.base();
    for (const auto& [start, end] : DataExtents(memory)) {
      uint64_t run_start = 0, run_len = 0;  // a run of consecutive non-zero pages not yet written
      for (uint64_t page = start; page < end; page += kPage) {
        stats.bytes_scanned += kPage;
        if (IsZeroPage(base + page)) {
          if (run_len) WriteAll(out.get(), base + run_start, run_len, run_start, path), stats.bytes_written += run_len;
          run_len = 0;
          continue;
        }
        if (!run_len) run_start = page;
        run_len += kPage;
        if (run_len == kMaxRun) {
          WriteAll(out.get(), base + run_start, run_len, run_start, path), stats.bytes_written += run_len;
          run_len = 0;
        }
      }
      if (run_len) WriteAll(out.get(), base + run_start, run_len, run_start, path), stats.bytes_written += run_len;
    }
    if (fsync(out.get()) != 0) throw VmmError(ErrorCode::kSnapshot, WithErrno("fsync " + path));
  } catch (...) {
    unlink(path.c_str());
    throw;
  }
  return stats;
}

}  // namespace stencil
