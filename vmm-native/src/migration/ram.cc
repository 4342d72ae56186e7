#include "ram.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <tuple>

#include "../error.h"
#include "../fd.h"
#include "../memory.h"
#include "../snapshot/memory_copy.h"
#include "../snapshot/sha256.h"

namespace stencil {

namespace {

constexpr uint64_t kPagemapPresent = 1ULL << 63;
constexpr uint64_t kPagemapSwapped = 1ULL << 62;
constexpr uint64_t kPagemapFileOrShared = 1ULL << 61;

void Mark(std::vector<uint64_t>& bitmap, uint64_t page) { bitmap[page / 64] |= 1ULL << (page % 64); }

// A clone's pages that no longer come from the template: anonymous copies made when the guest
// or a device wrote them (present and not file-backed), or such copies swapped out.
void MarkPrivatePages(const GuestMemory& memory, std::vector<uint64_t>& bitmap) {
  UniqueFd pagemap(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) throw VmmError(ErrorCode::kMigration, WithErrno("opening /proc/self/pagemap to find a clone's written pages"));
  const uint64_t pages = memory.size() / kGuestPageSize;
  const uint64_t first = reinterpret_cast<uint64_t>(memory.base()) / kGuestPageSize;
  std::vector<uint64_t> entries(4096);
  for (uint64_t done = 0; done < pages;) {
    uint64_t n = std::min<uint64_t>(entries.size(), pages - done);
    ssize_t got = pread(pagemap.get(), entries.data(), n * 8, static_cast<off_t>((first + done) * 8));
    if (got != static_cast<ssize_t>(n * 8)) throw VmmError(ErrorCode::kMigration, WithErrno("reading /proc/self/pagemap"));
    for (uint64_t i = 0; i < n; i++) {
      uint64_t e = entries[i];
      if ((e & kPagemapSwapped) || ((e & kPagemapPresent) && !(e & kPagemapFileOrShared))) Mark(bitmap, done + i);
    }
    done += n;
  }
}

}  // namespace

std::vector<uint64_t> FirstPassPages(const GuestMemory& memory, RamBaseline baseline) {
  std::vector<uint64_t> bitmap(DirtyBitmapWords(memory.size()), 0);
  if (memory.copy_on_write()) MarkPrivatePages(memory, bitmap);
  if (!memory.copy_on_write() || baseline == RamBaseline::kZero) {
    // The file's data: the guest's RAM (shared mapping) or the template's pages a clone reads.
    for (const auto& [start, end] : FileDataExtents(memory.fd(), memory.size()))
      for (uint64_t page = start / kGuestPageSize; page < end / kGuestPageSize; page++) Mark(bitmap, page);
  }
  return bitmap;
}

uint64_t CountPages(const std::vector<uint64_t>& bitmap) {
  uint64_t n = 0;
  for (uint64_t w : bitmap) n += static_cast<uint64_t>(__builtin_popcountll(w));
  return n;
}

void SendPages(StreamWriter& writer, const GuestMemory& memory, const std::vector<uint64_t>& bitmap, bool skip_zero,
               const Cancellation& cancel, RamSendStats* stats) {
  const uint8_t* base = memory.base();
  const uint64_t total = memory.size() / kGuestPageSize;
  uint64_t run_start = 0;
  uint32_t run = 0;       // consecutive non-zero pages not yet sent
  uint64_t zero_start = 0;
  uint32_t zeros = 0;     // consecutive zero pages not yet sent
  auto flush_run = [&] {
    if (run) writer.Ram(run_start * kGuestPageSize, base + run_start * kGuestPageSize, run), stats->pages += run;
    run = 0;
  };
  auto flush_zeros = [&] {
    if (zeros && !skip_zero) writer.Zero(zero_start * kGuestPageSize, zeros);
    stats->zero_pages += zeros;
    zeros = 0;
  };
  for (size_t w = 0; w < bitmap.size(); w++) {
    if (!bitmap[w]) {
      flush_run(), flush_zeros();
      continue;
    }
    cancel.ThrowIfCancelled();
    for (uint64_t bit = 0; bit < 64; bit++) {
      uint64_t page = w * 64 + bit;
      if (page >= total) break;
      if (!(bitmap[w] & (1ULL << bit))) {
        flush_run(), flush_zeros();
        continue;
      }
      if (IsZeroPage(base + page * kGuestPageSize)) {
        flush_run();
        if (zeros && (zero_start + zeros != page || zeros == kMaxPagesPerRecord)) flush_zeros();
        if (!zeros) zero_start = page;
        zeros++;
      } else {
        flush_zeros();
        if (run && (run_start + run != page || run == kMaxPagesPerRecord)) flush_run();
        if (!run) run_start = page;
        run++;
      }
    }
  }
  flush_run(), flush_zeros();
}

std::string TemplateContentHash(const std::string& path) {
  static std::mutex mu;
  static std::map<std::tuple<dev_t, ino_t, off_t, int64_t, int64_t>, std::string> cache;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw VmmError(ErrorCode::kMigration, WithErrno("template RAM file " + path));
  auto key = std::make_tuple(st.st_dev, st.st_ino, st.st_size, static_cast<int64_t>(st.st_mtim.tv_sec),
                             static_cast<int64_t>(st.st_mtim.tv_nsec));
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  std::string hash = Sha256FileHex(path);
  std::lock_guard<std::mutex> lock(mu);
  cache[key] = hash;
  return hash;
}

}  // namespace stencil
