#include "kernel_image.h"

#include <elf.h>

#include <cstring>

#include "../error.h"

namespace stencil {

namespace {

constexpr uint64_t kBzImageLoadAddr = 0x100000;  // protected-mode kernel at 1 MiB
constexpr uint32_t kHdrSMagic = 0x53726448;       // "HdrS"
constexpr uint16_t kXlfKernel64 = 1 << 0;         // xloadflags: has a 64-bit entry at +0x200

[[noreturn]] void Bad(const std::string& name, const std::string& why) {
  throw VmmError(ErrorCode::kKernelImage, "kernel " + name + ": " + why);
}

template <typename T>
T ReadAt(const ImageReader& file, uint64_t off, const std::string& name, const char* what) {
  T v;
  if (off > file.size || sizeof(T) > file.size - off || !file.read(off, &v, sizeof(T)))
    Bad(name, std::string("truncated while reading ") + what);
  return v;
}

KernelImage ParseElf(const ImageReader& file, const std::string& name) {
  auto eh = ReadAt<Elf64_Ehdr>(file, 0, name, "ELF header");
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) Bad(name, "ELF is not 64-bit");
  if (eh.e_machine != EM_X86_64) Bad(name, "ELF machine is not x86_64");
  if (eh.e_type != ET_EXEC) Bad(name, "ELF is not an executable (ET_EXEC)");
  if (eh.e_phentsize != sizeof(Elf64_Phdr)) Bad(name, "unexpected ELF program header size");
  KernelImage img{KernelImage::Format::kElf, {}, eh.e_entry, 0, {}};
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    auto ph = ReadAt<Elf64_Phdr>(file, eh.e_phoff + uint64_t(i) * sizeof(Elf64_Phdr), name, "program header");
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_offset > file.size || ph.p_filesz > file.size - ph.p_offset)
      Bad(name, "PT_LOAD segment " + std::to_string(i) + " extends past the end of the file");
    if (ph.p_filesz > ph.p_memsz) Bad(name, "PT_LOAD segment " + std::to_string(i) + " has filesz > memsz");
    img.segments.push_back({ph.p_offset, ph.p_filesz, ph.p_paddr, ph.p_memsz});
    img.kernel_end = std::max<uint64_t>(img.kernel_end, ph.p_paddr + ph.p_memsz);
  }
  if (img.segments.empty()) Bad(name, "ELF has no PT_LOAD segments");
  // vmlinux's ELF entry is the physical address of startup_64 (phys_startup_64).
  bool entry_loaded = false;
  for (auto& s : img.segments)
    if (img.entry_point >= s.guest_addr && img.entry_point < s.guest_addr + s.mem_size) entry_loaded = true;
  if (!entry_loaded) Bad(name, "ELF entry point is not inside a loaded segment");
  return img;
}

KernelImage ParseBzImage(const ImageReader& file, const std::string& name) {
  uint8_t setup_sects = ReadAt<uint8_t>(file, 0x1f1, name, "setup_sects");
  if (setup_sects == 0) setup_sects = 4;
  uint16_t version = ReadAt<uint16_t>(file, 0x206, name, "boot protocol version");
  if (version < 0x020c) Bad(name, "bzImage boot protocol " + std::to_string(version >> 8) + "." +
                                      std::to_string(version & 0xff) + " is too old (need 2.12 for 64-bit entry)");
  uint16_t xloadflags = ReadAt<uint16_t>(file, 0x236, name, "xloadflags");
  if (!(xloadflags & kXlfKernel64)) Bad(name, "bzImage has no 64-bit entry point (XLF_KERNEL_64 unset)");
  uint64_t pm_offset = (uint64_t(setup_sects) + 1) * 512;
  if (pm_offset >= file.size) Bad(name, "bzImage is truncated: no protected-mode kernel after the setup sectors");
  uint32_t init_size = ReadAt<uint32_t>(file, 0x260, name, "init_size");
  uint8_t header_len_end = ReadAt<uint8_t>(file, 0x201, name, "setup header length");  // jump offset
  uint64_t header_end = 0x202 + header_len_end;
  if (header_end > file.size || header_end <= 0x1f1) Bad(name, "bzImage setup header length is invalid");

  KernelImage img{KernelImage::Format::kBzImage, {}, kBzImageLoadAddr + 0x200, 0, {}};
  uint64_t pm_size = file.size - pm_offset;
  img.segments.push_back({pm_offset, pm_size, kBzImageLoadAddr, std::max<uint64_t>(pm_size, init_size)});
  img.kernel_end = kBzImageLoadAddr + std::max<uint64_t>(pm_size, init_size);
  img.setup_header.resize(header_end - 0x1f1);
  if (!file.read(0x1f1, img.setup_header.data(), img.setup_header.size())) Bad(name, "cannot read the setup header");
  img.initrd_addr_max = ReadAt<uint32_t>(file, 0x22c, name, "initrd_addr_max");
  img.cmdline_size_max = ReadAt<uint32_t>(file, 0x238, name, "cmdline_size");
  return img;
}

}  // namespace

KernelImage ParseKernelImage(const ImageReader& file, const std::string& name) {
  char magic[SELFMAG];
  if (file.size >= SELFMAG && file.read(0, magic, SELFMAG) && std::memcmp(magic, ELFMAG, SELFMAG) == 0)
    return ParseElf(file, name);
  if (file.size >= 0x206 + 4 && ReadAt<uint32_t>(file, 0x202, name, "header magic") == kHdrSMagic)
    return ParseBzImage(file, name);
  Bad(name, "is neither an ELF vmlinux nor a bzImage (no ELF magic, no \"HdrS\" setup header)");
}

KernelImage ParseKernelImage(const std::vector<uint8_t>& file, const std::string& name) {
  ImageReader reader{file.size(), [&file](uint64_t off, void* dst, size_t len) {
                       std::memcpy(dst, file.data() + off, len);  // ReadAt checked the range
                       return true;
                     }};
  return ParseKernelImage(reader, name);
}

}  // namespace stencil
