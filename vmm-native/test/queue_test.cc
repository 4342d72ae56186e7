// Virtqueue logic against a fake guest memory buffer: well-formed chains, and every way a
// guest can lie to the device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../src/virtio/queue.h"
#include "fake_memory.h"

using namespace stencil;
using stencil::testing::FakeDriverQueue;
using stencil::testing::FakeMemory;

namespace {

constexpr uint16_t kSize = 8;
constexpr uint64_t kAvail = FakeDriverQueue::kAvail, kUsed = FakeDriverQueue::kUsed, kData = 0x4000;

struct Harness {
  FakeMemory mem{0x10000};
  Virtqueue q{kSize};
  FakeDriverQueue drv{mem, q, kSize};
  void Desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) { drv.Desc(i, addr, len, flags, next); }
  void Publish(uint16_t head) { drv.Publish(head); }
};

}  // namespace

TEST(Virtqueue, EmptyQueueYieldsNothing) {
  Harness h;
  EXPECT_FALSE(h.q.Pop(h.mem).has_value());
}

TEST(Virtqueue, ReadableThenWritableChain) {
  Harness h;
  std::memcpy(h.mem.bytes.data() + kData, "ping", 4);
  h.Desc(0, kData, 4, /*NEXT*/ 1, 1);
  h.Desc(1, kData + 0x100, 16, /*WRITE*/ 2, 0);
  h.Publish(0);
  auto chain = h.q.Pop(h.mem);
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head, 0);
  ASSERT_EQ(chain->readable.size(), 1u);
  ASSERT_EQ(chain->writable.size(), 1u);
  uint8_t buf[4];
  EXPECT_EQ(chain->CopyFromReadable(buf, 4), 4u);
  EXPECT_EQ(std::memcmp(buf, "ping", 4), 0);
  EXPECT_EQ(chain->CopyToWritable(reinterpret_cast<const uint8_t*>("pong"), 4), 4u);
  EXPECT_EQ(std::memcmp(h.mem.bytes.data() + kData + 0x100, "pong", 4), 0);

  h.q.PushUsed(h.mem, chain->head, 4);
  EXPECT_EQ(h.mem.Get<uint16_t>(kUsed + 2), 1);
  EXPECT_EQ(h.mem.Get<uint32_t>(kUsed + 4), 0u);
  EXPECT_EQ(h.mem.Get<uint32_t>(kUsed + 8), 4u);
  EXPECT_FALSE(h.q.Pop(h.mem).has_value());
}

TEST(Virtqueue, IndexesWrapAround) {
  Harness h;
  h.q.RestoreIndexes(0xfffe, 0xfffe);
  h.drv.set_avail_idx(0xfffe);
  for (int i = 0; i < 4; i++) {
    h.Desc(0, kData, 8, 2, 0);
    h.Publish(0);
    auto chain = h.q.Pop(h.mem);
    ASSERT_TRUE(chain.has_value());
    h.q.PushUsed(h.mem, chain->head, 8);
  }
  EXPECT_EQ(h.q.next_avail(), 2);
  EXPECT_EQ(h.mem.Get<uint16_t>(kUsed + 2), 2);
}

TEST(Virtqueue, RejectsHeadOutOfRange) {
  Harness h;
  h.Publish(kSize);
  EXPECT_THROW(h.q.Pop(h.mem), VirtqueueError);
}

TEST(Virtqueue, RejectsNextOutOfRange) {
  Harness h;
  h.Desc(0, kData, 4, 1, 200);
  h.Publish(0);
  EXPECT_THROW(h.q.Pop(h.mem), VirtqueueError);
}

TEST(Virtqueue, RejectsDescriptorLoop) {
  Harness h;
  h.Desc(0, kData, 4, 1, 1);
  h.Desc(1, kData, 4, 1, 0);
  h.Publish(0);
  EXPECT_THROW(h.q.Pop(h.mem), VirtqueueError);
}

TEST(Virtqueue, RejectsBufferOutsideRam) {
  Harness h;
  h.Desc(0, 0xfff0, 0x100, 0, 0);
  h.Publish(0);
  try {
    h.q.Pop(h.mem);
    ADD_FAILURE() << "a buffer past the end of RAM was accepted";
  } catch (const VirtqueueError& e) {
    EXPECT_STREQ(e.what(), "buffer 0xfff0+256 is outside RAM");
  }
  Harness overflow;
  overflow.Desc(0, ~0ull - 2, 16, 0, 0);  // address + len wraps around 2^64
  overflow.Publish(0);
  EXPECT_THROW(overflow.q.Pop(overflow.mem), VirtqueueError);
}

TEST(Virtqueue, RejectsReadableAfterWritable) {
  Harness h;
  h.Desc(0, kData, 4, 2 | 1, 1);
  h.Desc(1, kData, 4, 0, 0);
  h.Publish(0);
  EXPECT_THROW(h.q.Pop(h.mem), VirtqueueError);
}

TEST(Virtqueue, RejectsIndirectWhenNotNegotiated) {
  Harness h;
  h.Desc(0, kData, 16, 4, 0);
  h.Publish(0);
  EXPECT_THROW(h.q.Pop(h.mem), VirtqueueError);
}

TEST(Virtqueue, RejectsAvailIndexJump) {
  Harness h;
  h.mem.Put<uint16_t>(kAvail + 2, kSize + 1);
  EXPECT_THROW(h.q.Pop(h.mem), VirtqueueError);
}

TEST(Virtqueue, ValidateChecksSizeAndRings) {
  Harness h;
  std::string why;
  EXPECT_TRUE(h.q.Validate(h.mem, &why));
  h.q.set_size(6);
  EXPECT_FALSE(h.q.Validate(h.mem, &why));
  EXPECT_NE(why.find("power of two"), std::string::npos);
  h.q.set_size(kSize);
  h.q.used_addr = 0xfff8;
  EXPECT_FALSE(h.q.Validate(h.mem, &why));
  EXPECT_NE(why.find("outside"), std::string::npos);
}

TEST(Virtqueue, NoInterruptFlagIsHonoured) {
  Harness h;
  EXPECT_TRUE(h.q.NeedsInterrupt(h.mem));
  h.mem.Put<uint16_t>(kAvail, 1);
  EXPECT_FALSE(h.q.NeedsInterrupt(h.mem));
}

// A live migration marks guest pages dirty when devices translate them: a buffer the device
// writes after Pop must be translated again when it is returned, or a page sent in between
// would reach the destination without those writes.
TEST(Virtqueue, PushUsedTranslatesTheChainsWritableBuffersAgain) {
  struct RecordingMemory : FakeMemory {
    using FakeMemory::FakeMemory;
    uint8_t* Translate(uint64_t addr, uint64_t len) const override {
      if (recording) seen.emplace_back(addr, len);
      return FakeMemory::Translate(addr, len);
    }
    bool recording = false;
    mutable std::vector<std::pair<uint64_t, uint64_t>> seen;
  };
  RecordingMemory mem{0x10000};
  Virtqueue q{kSize};
  FakeDriverQueue drv{mem, q, kSize};
  drv.Desc(0, kData, 4, /*NEXT*/ 1, 1);
  drv.Desc(1, kData + 0x100, 16, /*WRITE|NEXT*/ 3, 2);
  drv.Desc(2, kData + 0x2000, 32, /*WRITE*/ 2, 0);
  drv.Publish(0);
  auto chain = q.Pop(mem);
  ASSERT_TRUE(chain.has_value());
  mem.recording = true;  // as if dirty tracking started now, with the chain in flight
  q.PushUsed(mem, chain->head, 48);
  auto saw = [&](uint64_t addr, uint64_t len) {
    return std::find(mem.seen.begin(), mem.seen.end(), std::make_pair(addr, len)) != mem.seen.end();
  };
  EXPECT_TRUE(saw(kData + 0x100, 16));
  EXPECT_TRUE(saw(kData + 0x2000, 32));
  EXPECT_FALSE(saw(kData, 4)) << "a readable buffer is never written by the device";
  // Once used, the chain is forgotten: a second PushUsed of the head marks nothing of it.
  mem.seen.clear();
  drv.Publish(0);
  auto again = q.Pop(mem);
  ASSERT_TRUE(again.has_value());
  q.PushUsed(mem, again->head, 0);
  EXPECT_TRUE(saw(kData + 0x100, 16)) << "the new chain's buffers are marked once more";
}
