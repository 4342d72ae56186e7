// Copying guest RAM into a snapshot's memory file for a VM that keeps running afterwards (its
// RAM may be a memfd, a tmpfs file, or a clone's copy-on-write mapping, none of which can simply
// be given a second name). The copy is sparse: holes in the backing file are skipped without
// touching them (reading a hole through a shared mapping would allocate it), and so is every
// all-zero page, so the output file's size on disk follows what the guest really uses.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace stencil {

class GuestMemory;

struct MemoryCopyStats {
  uint64_t bytes_written = 0;  // non-zero pages written
  uint64_t bytes_scanned = 0;  // pages read (holes are neither read nor written)
};

// The ranges of a file that hold data, as [start, end) pairs page-aligned at the start and
// clipped to `size` (SEEK_DATA/SEEK_HOLE; the whole range where the filesystem has no SEEK_DATA).
// Holes read as zeros and are never touched: reading one through a shared mapping allocates it.
std::vector<std::pair<uint64_t, uint64_t>> FileDataExtents(int fd, uint64_t size);
bool IsZeroPage(const uint8_t* page);

// Creates `path` (which must not exist), sized to all of guest RAM, writes the non-zero pages and
// fsyncs it. The guest must be paused. On failure the file is removed and VmmError(kSnapshot)
// names the path and the cause.
MemoryCopyStats CopyGuestMemory(const GuestMemory& memory, const std::string& path);

}  // namespace stencil
