// Guest RAM in a live migration: which pages the first pass sends (what differs from what the
// destination starts with), sending a bitmap's pages as runs, and a template's content identity.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "stream.h"

namespace stencil {

class GuestMemory;

// What the destination's RAM holds before any page arrives.
enum class RamBaseline {
  kZero,      // a new, empty RAM file
  kTemplate,  // the same template file the source clone maps copy-on-write
};

// Pages (bit i: the page at RAM offset i * 4096) that may differ from `baseline`: for a clone
// with kTemplate, only the pages it has written (private in /proc/self/pagemap, or swapped);
// otherwise every page holding data in the backing file, plus a clone's private pages.
std::vector<uint64_t> FirstPassPages(const GuestMemory& memory, RamBaseline baseline);

uint64_t CountPages(const std::vector<uint64_t>& bitmap);

struct RamSendStats {
  uint64_t pages = 0;        // pages sent in full
  uint64_t zero_pages = 0;   // sent as zero runs, or skipped where the destination has zeros
};

// Sends the marked pages: runs of non-zero pages as 'R' records, zero pages as 'Z' (or not at
// all with skip_zero: the destination's page is known to be zero already). Checks `cancel`
// between runs.
void SendPages(StreamWriter& writer, const GuestMemory& memory, const std::vector<uint64_t>& bitmap, bool skip_zero,
               const Cancellation& cancel, RamSendStats* stats);

// The SHA-256 of a template's RAM file, hex, computed once per file version (device, inode,
// size, modification time) in this process.
std::string TemplateContentHash(const std::string& path);

}  // namespace stencil
