// Parsing of Linux kernel images for direct boot: a vmlinux ELF64 or a bzImage. Pure functions
// over bytes, so they are unit-tested without a VM.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace stencil {

// A span of the image file to copy into guest memory at guest_addr (zero-filled up to mem_size).
struct LoadSegment {
  uint64_t file_offset;
  uint64_t file_size;
  uint64_t guest_addr;
  uint64_t mem_size;
};

struct KernelImage {
  enum class Format { kElf, kBzImage } format;
  std::vector<LoadSegment> segments;
  uint64_t entry_point;           // guest-physical 64-bit entry
  uint64_t kernel_end;            // highest guest-physical byte used by the loaded kernel
  std::vector<uint8_t> setup_header;  // bzImage only: bytes 0x1f1.. of the setup header
  uint32_t initrd_addr_max = 0x7fffffff;
  uint32_t cmdline_size_max = 2048;
};

// Random access to an image file, so a loader reads only the headers and then each segment
// straight into guest RAM (a vmlinux's symbols and a whole-file copy are never read).
struct ImageReader {
  uint64_t size;
  std::function<bool(uint64_t offset, void* dst, size_t len)> read;  // false: I/O error
};

// Throws VmmError(kKernelImage) naming the problem ("not an ELF or bzImage", "no PT_LOAD", ...).
KernelImage ParseKernelImage(const ImageReader& file, const std::string& name);
KernelImage ParseKernelImage(const std::vector<uint8_t>& file, const std::string& name);

}  // namespace stencil
