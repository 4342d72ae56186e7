// The migration stream's checksum: CRC-32C (Castagnoli), with SSE4.2's crc32 instruction where the
// CPU has one. It catches a stream damaged in transit, which is all the end marker is for; like
// any unkeyed digest it authenticates nothing. SHA-256 took more than half of a migration's time
// (every byte is hashed on both sides), and much more on CPUs without SHA extensions.
#pragma once
#include <cstddef>
#include <cstdint>

namespace stencil {

// CRC-32C of `size` bytes, continuing from `crc` (0 to start): Crc32c(Crc32c(0, a), b) is the
// CRC-32C of a followed by b.
uint32_t Crc32c(uint32_t crc, const void* data, size_t size);
// The same without the crc32 instruction (what CPUs without SSE4.2 use; tests compare the two).
uint32_t Crc32cPortable(uint32_t crc, const void* data, size_t size);

class StreamChecksum {
 public:
  void Update(const void* data, size_t size) { crc_ = Crc32c(crc_, data, size); }
  uint32_t value() const { return crc_; }

 private:
  uint32_t crc_ = 0;
};

}  // namespace stencil
