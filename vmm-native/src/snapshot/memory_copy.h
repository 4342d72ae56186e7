// Copying guest RAM into a snapshot's memory file for a VM that keeps running afterwards (its
// RAM may be a memfd, a tmpfs file, or a clone's copy-on-write mapping, none of which can simply
// be given a second name). The copy is sparse: holes in the backing file are skipped without
// touching them (reading a hole through a shared mapping would allocate it), and so is every
// all-zero page, so the output file's size on disk follows what the guest really uses.
#pragma once
#include <cstdint>
#include <string>

namespace stencil {

class GuestMemory;

struct MemoryCopyStats {
  uint64_t bytes_written = 0;  // non-zero pages written
  uint64_t bytes_scanned = 0;  // pages read (holes are neither read nor written)
};

// Creates `path` (which must not exist), sized to all of guest RAM, writes the non-zero pages and
// fsyncs it. The guest must be paused. On failure the file is removed and VmmError(kSnapshot)
// names the path and the cause.
MemoryCopyStats CopyGuestMemory(const GuestMemory& memory, const std::string& path);

}  // namespace stencil
