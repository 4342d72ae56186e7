// Copy-mode snapshots' RAM copy: the output matches guest RAM byte for byte, holes and all-zero
// pages stay holes, a clone's private writes are copied, and a failed copy leaves nothing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "../src/error.h"
#include "../src/memory.h"
#include "../src/snapshot/memory_copy.h"

using namespace stencil;

namespace {

constexpr uint64_t kSize = 16ULL << 20;

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

class MemoryCopy : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/dev/shm/stencil-memcopy-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(MemoryCopy, CopiesDataPagesAndLeavesZeroPagesAsHoles) {
  MemoryOptions o;
  o.size = kSize;
  o.backing = MemoryBacking::kMemfd;
  GuestMemory memory(o);
  uint8_t* base = const_cast<uint8_t*>(memory.base());
  std::memset(base + 0x1000, 0xab, 4096);
  std::memset(base + 0x500000, 0x00, 8192);  // allocated, but zero: need not be written
  base[kSize - 1] = 7;
  std::string out = dir_ + "/memory";
  MemoryCopyStats stats = CopyGuestMemory(memory, out);
  EXPECT_EQ(stats.bytes_written, 2 * 4096u);
  EXPECT_LT(stats.bytes_scanned, kSize) << "holes of the memfd were read";
  std::vector<uint8_t> copy = ReadAll(out);
  ASSERT_EQ(copy.size(), kSize);
  EXPECT_EQ(std::memcmp(copy.data(), base, kSize), 0);
  struct stat st;
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 4 * 4096u);

  // The target exists now: a second copy is refused and the first is left as it was.
  try {
    CopyGuestMemory(memory, out);
    ADD_FAILURE() << "copied over an existing file";
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kSnapshot);
    EXPECT_NE(std::string(e.what()).find("creating snapshot memory file " + out), std::string::npos) << e.what();
  }
  EXPECT_EQ(ReadAll(out), copy);
}

TEST_F(MemoryCopy, CopiesAClonesPrivateWritesOverItsTemplate) {
  std::string file = dir_ + "/template";
  {
    std::vector<uint8_t> page(4096, 0x11);
    int fd = open(file.c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, kSize), 0);
    ASSERT_EQ(pwrite(fd, page.data(), page.size(), 0x2000), 4096);
    close(fd);
  }
  MemoryOptions o;
  o.size = kSize;
  o.directory = dir_;
  o.name = "template";
  o.sharing = MemorySharing::kPrivateCopyOnWrite;
  GuestMemory clone(o);
  uint8_t* base = const_cast<uint8_t*>(clone.base());
  base[0x300000] = 0x22;  // a hole in the template, written by the clone only
  std::string out = dir_ + "/clone-memory";
  CopyGuestMemory(clone, out);
  std::vector<uint8_t> copy = ReadAll(out);
  ASSERT_EQ(copy.size(), kSize);
  EXPECT_EQ(copy[0x2000], 0x11);
  EXPECT_EQ(copy[0x300000], 0x22);
  EXPECT_EQ(ReadAll(file)[0x300000], 0) << "the clone wrote into its template";
}

TEST_F(MemoryCopy, ASharedMappingOfAnExistingFileKeepsTheFile) {
  std::string file = dir_ + "/shared";
  {
    int fd = open(file.c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, kSize), 0);
    close(fd);
  }
  MemoryOptions o;
  o.size = kSize;
  o.directory = dir_;
  o.name = "shared";
  o.open_existing = true;
  {
    GuestMemory memory(o);
    const_cast<uint8_t*>(memory.base())[0x1234] = 0x5a;
  }
  std::vector<uint8_t> after = ReadAll(file);
  ASSERT_EQ(after.size(), kSize) << "the file was removed or resized";
  EXPECT_EQ(after[0x1234], 0x5a);
  o.size = kSize * 2;
  try {
    GuestMemory wrong(o);
    ADD_FAILURE() << "mapped a file of the wrong size";
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("does not have the expected size"), std::string::npos) << e.what();
  }
}

}  // namespace
