// The `state` file of a snapshot: a versioned, self-describing container of named sections, each
// with its own version, closed by a SHA-256 of everything before it.
//
//   "STNCSTATE\0\0\0\0\0\0\0"  (16 bytes magic)
//   u32 format version
//   u32 section count
//   per section: string name, u32 section version, blob payload
//   32-byte SHA-256 of all bytes above
//
// A reader refuses a wrong magic, another format version, a checksum mismatch or a truncated
// file before looking at any section. Writing goes to a temporary file in the same directory,
// fsync'ed and renamed over the target: readers see the old file or the complete new one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "bytes.h"

namespace stencil {

constexpr uint32_t kStateFormatVersion = 1;

struct StateSection {
  std::string name;     // "vm", "vcpu.0", "device.3", ...
  uint32_t version = 1;  // of this section's payload layout
  std::vector<uint8_t> payload;
};

class StateFile {
 public:
  void Add(std::string name, uint32_t version, std::vector<uint8_t> payload);
  // Throws VmmError(kSnapshot) naming the section if it is missing or has another version.
  const StateSection& Get(const std::string& name, uint32_t expected_version) const;
  ByteReader Reader(const std::string& name, uint32_t expected_version) const;
  bool Has(const std::string& name) const;
  const std::vector<StateSection>& sections() const { return sections_; }

  std::vector<uint8_t> Encode() const;
  // `origin` names the input in errors (a path).
  static StateFile Decode(const std::vector<uint8_t>& bytes, const std::string& origin);

 private:
  std::vector<StateSection> sections_;
};

// Writes `bytes` to `path` atomically (temp file in the same directory + fsync + rename).
// On failure nothing is left behind and the error names the path.
void WriteFileAtomically(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> ReadWholeFile(const std::string& path, const char* what);

}  // namespace stencil
