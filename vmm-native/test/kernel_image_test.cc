// Kernel image parsing on synthetic images: valid vmlinux/bzImage, and the malformed ones a
// user could pass by mistake.
#include <elf.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "../src/error.h"
#include "../src/loader/kernel_image.h"

using namespace stencil;

namespace {

std::vector<uint8_t> MakeElf(uint64_t entry, uint64_t paddr, uint64_t filesz, uint64_t memsz) {
  std::vector<uint8_t> f(0x1000 + filesz, 0);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_entry = entry;
  eh.e_phoff = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  Elf64_Phdr ph{};
  ph.p_type = PT_LOAD;
  ph.p_offset = 0x1000;
  ph.p_paddr = paddr;
  ph.p_filesz = filesz;
  ph.p_memsz = memsz;
  std::memcpy(f.data(), &eh, sizeof eh);
  std::memcpy(f.data() + sizeof eh, &ph, sizeof ph);
  return f;
}

std::vector<uint8_t> MakeBzImage(uint16_t version, uint16_t xloadflags, uint8_t setup_sects = 4) {
  std::vector<uint8_t> f((setup_sects + 1) * 512 + 4096, 0);
  f[0x1f1] = setup_sects;
  f[0x201] = 0x6a;  // jump offset: header ends at 0x26c
  uint32_t magic = 0x53726448;
  std::memcpy(&f[0x202], &magic, 4);
  std::memcpy(&f[0x206], &version, 2);
  std::memcpy(&f[0x236], &xloadflags, 2);
  uint32_t init_size = 0x800000, cmdline_size = 4096, initrd_max = 0x7fffffff;
  std::memcpy(&f[0x260], &init_size, 4);
  std::memcpy(&f[0x238], &cmdline_size, 4);
  std::memcpy(&f[0x22c], &initrd_max, 4);
  return f;
}

std::string ErrorOf(const std::vector<uint8_t>& f) {
  try {
    ParseKernelImage(f, "k");
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKernelImage);
    return e.what();
  }
  return "";
}

}  // namespace

TEST(KernelImage, ParsesVmlinux) {
  auto img = ParseKernelImage(MakeElf(0x1000000, 0x1000000, 0x200, 0x400), "vmlinux");
  EXPECT_EQ(img.format, KernelImage::Format::kElf);
  EXPECT_EQ(img.entry_point, 0x1000000u);
  ASSERT_EQ(img.segments.size(), 1u);
  EXPECT_EQ(img.segments[0].file_offset, 0x1000u);
  EXPECT_EQ(img.kernel_end, 0x1000400u);
}

TEST(KernelImage, ParsesBzImage) {
  auto img = ParseKernelImage(MakeBzImage(0x020f, 1), "bzImage");
  EXPECT_EQ(img.format, KernelImage::Format::kBzImage);
  EXPECT_EQ(img.entry_point, 0x100200u);
  EXPECT_EQ(img.segments[0].file_offset, 5u * 512);
  EXPECT_EQ(img.segments[0].guest_addr, 0x100000u);
  EXPECT_EQ(img.kernel_end, 0x100000u + 0x800000u);
  EXPECT_EQ(img.cmdline_size_max, 4096u);
  EXPECT_EQ(img.setup_header.size(), 0x26cu - 0x1f1u);
}

TEST(KernelImage, RejectsGarbage) {
  EXPECT_NE(ErrorOf(std::vector<uint8_t>(4096, 0x42)).find("neither an ELF vmlinux nor a bzImage"), std::string::npos);
  EXPECT_NE(ErrorOf({}).find("neither"), std::string::npos);
}

TEST(KernelImage, RejectsTruncatedElf) {
  auto f = MakeElf(0x1000000, 0x1000000, 0x200, 0x400);
  f.resize(0x1100);  // segment runs past the end
  EXPECT_NE(ErrorOf(f).find("past the end"), std::string::npos);
  f.resize(20);
  EXPECT_NE(ErrorOf(f).find("truncated"), std::string::npos);
}

TEST(KernelImage, RejectsEntryOutsideSegments) {
  EXPECT_NE(ErrorOf(MakeElf(0x5000000, 0x1000000, 0x200, 0x400)).find("entry point"), std::string::npos);
}

TEST(KernelImage, RejectsOldOr32BitBzImage) {
  EXPECT_NE(ErrorOf(MakeBzImage(0x0206, 1)).find("too old"), std::string::npos);
  EXPECT_NE(ErrorOf(MakeBzImage(0x020f, 0)).find("64-bit entry"), std::string::npos);
}

// The loader reads headers through the reader and the segments itself, straight into guest RAM.
TEST(KernelImage, ParsingReadsOnlyTheHeaders) {
  for (const auto& file : {MakeElf(0x1000000, 0x1000000, 0x10000, 0x10000), MakeBzImage(0x020f, 1)}) {
    uint64_t read_end = 0;
    ImageReader reader{file.size(), [&](uint64_t off, void* dst, size_t len) {
                         std::memcpy(dst, file.data() + off, len);
                         read_end = std::max<uint64_t>(read_end, off + len);
                         return true;
                       }};
    KernelImage img = ParseKernelImage(reader, "k");
    EXPECT_LE(read_end, img.segments.at(0).file_offset);
  }
}

TEST(KernelImage, AFailingReadIsReportedAsTruncation) {
  auto file = MakeElf(0x1000000, 0x1000000, 0x200, 0x400);
  ImageReader failing{file.size(), [](uint64_t, void*, size_t) { return false; }};
  try {
    ParseKernelImage(failing, "k");
    ADD_FAILURE() << "no error";
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated while reading"), std::string::npos) << e.what();
  }
}
