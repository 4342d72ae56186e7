// virtio-blk against a temp file: reads, writes, flush, bounds and read-only enforcement.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "../src/error.h"
#include "../src/virtio/blk.h"
#include "fake_memory.h"

using namespace stencil;
using namespace stencil::testing;

namespace {

constexpr uint16_t kWrite = 2, kNext = 1;
constexpr uint64_t kHdr = 0x4000, kData = 0x5000, kStatus = 0x6000;

struct BlkHarness {
  std::string path;
  FakeMemory mem{0x10000};
  std::vector<Virtqueue> queues{Virtqueue(256)};
  CountingInterrupt irq;
  std::unique_ptr<VirtioBlk> dev;
  std::unique_ptr<FakeDriverQueue> drv;

  explicit BlkHarness(bool read_only, size_t sectors = 16) {
    char tmpl[] = "/tmp/stencil-blk-XXXXXX";
    int fd = mkstemp(tmpl);
    path = tmpl;
    std::string pattern(sectors * 512, 'a');
    for (size_t i = 0; i < pattern.size(); i++) pattern[i] = static_cast<char>('a' + (i / 512) % 26);
    EXPECT_EQ(write(fd, pattern.data(), pattern.size()), static_cast<ssize_t>(pattern.size()));
    close(fd);
    dev = std::make_unique<VirtioBlk>(BlockDeviceConfig{path, read_only, "disk-1"});
    drv = std::make_unique<FakeDriverQueue>(mem, queues[0], 16);
    dev->Activate(mem, queues, irq);
  }
  ~BlkHarness() {
    dev.reset();
    unlink(path.c_str());
  }
  // Submits header + data + status and waits for the device to complete it; returns the status.
  uint8_t Request(uint32_t type, uint64_t sector, uint32_t len, bool device_writes_data) {
    mem.Put<uint32_t>(kHdr, type);
    mem.Put<uint64_t>(kHdr + 8, sector);
    mem.Put<uint8_t>(kStatus, 0xff);
    drv->Desc(0, kHdr, 16, kNext, 1);
    if (len) {
      drv->Desc(1, kData, len, kNext | (device_writes_data ? kWrite : 0), 2);
      drv->Desc(2, kStatus, 1, kWrite, 0);
    } else {
      drv->Desc(1, kStatus, 1, kWrite, 0);
    }
    uint16_t before = drv->used_idx();
    drv->Publish(0);
    dev->QueueNotify(0);
    for (int i = 0; i < 2000 && drv->used_idx() == before; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_NE(drv->used_idx(), before) << "request not completed";
    return mem.Get<uint8_t>(kStatus);
  }
};

}  // namespace

TEST(VirtioBlk, ReportsCapacityAndFeatures) {
  BlkHarness h(true, 16);
  uint64_t capacity = 0;
  h.dev->ReadConfig(0, reinterpret_cast<uint8_t*>(&capacity), 8);
  EXPECT_EQ(capacity, 16u);
  EXPECT_TRUE(h.dev->features() & (1ULL << 5));  // VIRTIO_BLK_F_RO
}

TEST(VirtioBlk, ReadsAndWrites) {
  BlkHarness h(false);
  EXPECT_EQ(h.Request(0, 2, 1024, true), 0);
  EXPECT_EQ(h.mem.bytes[kData], 'c');
  EXPECT_EQ(h.mem.bytes[kData + 512], 'd');
  std::memset(h.mem.bytes.data() + kData, 'Z', 512);
  EXPECT_EQ(h.Request(1, 5, 512, false), 0);
  EXPECT_EQ(h.Request(4, 0, 0, false), 0);  // flush
  std::memset(h.mem.bytes.data() + kData, 0, 512);
  EXPECT_EQ(h.Request(0, 5, 512, true), 0);
  EXPECT_EQ(h.mem.bytes[kData + 100], 'Z');
  EXPECT_GT(h.irq.used.load(), 0);
}

TEST(VirtioBlk, RejectsOutOfRangeAndReadOnlyWrites) {
  BlkHarness h(true, 16);
  EXPECT_EQ(h.Request(0, 16, 512, true), 1);          // past the end
  EXPECT_EQ(h.Request(0, ~0ULL - 1, 1024, true), 1);  // sector arithmetic overflow
  EXPECT_EQ(h.Request(0, 0, 100, true), 1);           // not a sector multiple
  EXPECT_EQ(h.Request(1, 0, 512, false), 1);          // read-only
  EXPECT_EQ(h.Request(99, 0, 512, true), 2);          // unsupported
}

TEST(VirtioBlk, ServesRequestsPublishedBeforeActivationWithoutANotify) {
  // A restored guest's request whose notify the template's worker had not taken when it was
  // quiesced: the clone's device, activated from the saved state, must look at its queue itself.
  BlkHarness h(true);
  h.mem.Put<uint32_t>(kHdr, 8);  // GET_ID
  h.drv->Desc(0, kHdr, 16, kNext, 1);
  h.drv->Desc(1, kData, 20, kNext | kWrite, 2);
  h.drv->Desc(2, kStatus, 1, kWrite, 0);
  h.drv->Publish(0);
  h.dev->Activate(h.mem, h.queues, h.irq);
  for (int i = 0; i < 2000 && h.drv->used_idx() == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(h.drv->used_idx(), 1);
}

TEST(VirtioBlk, GetIdReturnsSerial) {
  BlkHarness h(true);
  EXPECT_EQ(h.Request(8, 0, 20, true), 0);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(h.mem.bytes.data() + kData)), "disk-1");
}

TEST(VirtioBlk, BadBackingFilesAreNamed) {
  try {
    VirtioBlk d(BlockDeviceConfig{"/nonexistent/disk.img", true, ""});
    FAIL();
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/disk.img"), std::string::npos);
  }
  EXPECT_THROW(VirtioBlk(BlockDeviceConfig{"/tmp", true, ""}), VmmError);
}

TEST(VirtioBlk, QuiescedDeviceServesNothingUntilUnquiesced) {
  BlkHarness h(true, 16);
  EXPECT_EQ(h.Request(0, 0, 512, true), 0);  // a request completes normally
  h.dev->Quiesce();
  h.mem.Put<uint8_t>(kStatus, 0xff);
  h.drv->Desc(0, kHdr, 16, kNext, 1);
  h.drv->Desc(1, kData, 512, kNext | kWrite, 2);
  h.drv->Desc(2, kStatus, 1, kWrite, 0);
  uint16_t before = h.drv->used_idx();
  h.drv->Publish(0);
  h.dev->QueueNotify(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(h.drv->used_idx(), before) << "a quiesced device wrote guest memory";
  EXPECT_EQ(h.mem.Get<uint8_t>(kStatus), 0xff);
  h.dev->Unquiesce();
  for (int i = 0; i < 2000 && h.drv->used_idx() == before; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_NE(h.drv->used_idx(), before) << "the request published while quiesced was never served";
}
