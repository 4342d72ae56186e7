// The virtio-9p device: config space, requests served through a virtqueue by the worker thread,
// broken chains, reset, and save/restore of its state.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "../src/error.h"
#include "../src/virtio/p9/device.h"
#include "fake_memory.h"
#include "p9_client.h"

using namespace stencil;
using namespace p9test;

namespace {

using stencil::testing::CountingInterrupt;
using stencil::testing::FakeDriverQueue;
using stencil::testing::FakeMemory;

constexpr uint16_t kSize = 16;
constexpr uint64_t kAvail = FakeDriverQueue::kAvail, kUsed = FakeDriverQueue::kUsed, kReq = 0x4000, kResp = 0x20000;

// Drives a VirtioP9 through one virtqueue in fake guest memory, one request at a time.
struct Guest {
  FakeMemory mem{0x40000};
  std::vector<Virtqueue> queues{Virtqueue(kSize)};
  FakeDriverQueue driver{mem, queues[0], kSize};
  CountingInterrupt irq;

  void Desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    driver.Desc(i, addr, len, flags, next);
  }
  // The ring carries on at `idx` (a restored guest).
  void StartAt(uint16_t idx) {
    driver.set_avail_idx(idx);
    mem.Put<uint16_t>(kAvail + 2, idx);
    mem.Put<uint16_t>(kUsed + 2, idx);
  }
  bool WaitUsed(uint16_t idx) {
    for (int i = 0; i < 5000; i++) {
      std::atomic_thread_fence(std::memory_order_acquire);
      if (driver.used_idx() == idx) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  // One request through the queue: the request split over two readable descriptors, the reply
  // room split over two writable ones (so gather and scatter are both exercised).
  std::vector<uint8_t> Transact(VirtioP9& dev, const std::vector<uint8_t>& msg, size_t room) {
    uint32_t half = static_cast<uint32_t>(msg.size() / 2);
    std::memcpy(mem.bytes.data() + kReq, msg.data(), msg.size());
    uint32_t first_room = static_cast<uint32_t>(std::min<size_t>(room, 9));
    Desc(0, kReq, half, 1, 1);
    Desc(1, kReq + half, static_cast<uint32_t>(msg.size()) - half, 1, 2);
    Desc(2, kResp, first_room, 2 | 1, 3);
    Desc(3, kResp + 0x100, static_cast<uint32_t>(room - first_room), 2, 0);
    uint16_t used_before = driver.used_idx();
    driver.Publish(0);
    dev.QueueNotify(0);
    if (!WaitUsed(static_cast<uint16_t>(used_before + 1))) {
      ADD_FAILURE() << "the device did not answer";
      return {};
    }
    uint32_t len = driver.used_len(used_before);
    std::vector<uint8_t> out(mem.bytes.data() + kResp, mem.bytes.data() + kResp + std::min<uint32_t>(len, first_room));
    if (len > first_room) out.insert(out.end(), mem.bytes.data() + kResp + 0x100, mem.bytes.data() + kResp + 0x100 + (len - first_room));
    return out;
  }
  Client ClientFor(VirtioP9& dev, size_t room = 8192) {
    return Client([this, &dev, room](const std::vector<uint8_t>& m, size_t) { return Transact(dev, m, room); });
  }
};

}  // namespace

TEST(VirtioP9, AdvertisesTagInConfigSpace) {
  ScratchDir dir;
  VirtioP9 dev("rootfs", dir.path(), false);
  EXPECT_EQ(dev.device_type(), 9u);
  EXPECT_TRUE(dev.features() & kVirtio9pFMountTag);
  EXPECT_TRUE(dev.features() & kVirtioFVersion1);
  uint8_t cfg[16];
  dev.ReadConfig(0, cfg, sizeof cfg);
  EXPECT_EQ(cfg[0] | cfg[1] << 8, 6);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(cfg + 2), 6), "rootfs");
  EXPECT_EQ(cfg[8], 0);
  uint8_t far = 0xaa;
  dev.ReadConfig(~0ull, &far, 1);  // offsets far past the end (and wrapping) read as zero
  EXPECT_EQ(far, 0);
}

TEST(VirtioP9, RejectsBadTagsAndMissingDirectories) {
  ScratchDir dir;
  for (std::string tag : {std::string(), std::string("has space"), std::string("a,b"), std::string(65, 't')}) {
    try {
      VirtioP9 dev(tag, dir.path(), false);
      ADD_FAILURE() << "tag '" << tag << "' accepted";
    } catch (const VmmError& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    }
  }
  try {
    VirtioP9 dev("data", dir / "missing", false);
    ADD_FAILURE() << "missing directory accepted";
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("'data'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  dir.WriteFile("file", "x");
  EXPECT_THROW(VirtioP9("data", dir / "file", false), VmmError);
  EXPECT_THROW(VirtioP9("data", "relative/path", false), VmmError);
}

TEST(VirtioP9, ServesRequestsThroughTheQueue) {
  ScratchDir dir;
  dir.WriteFile("hello", "from the host");
  Guest g;  // declared first: the device (and its worker) must go before the guest memory
  VirtioP9 dev("share", dir.path(), false);
  dev.Activate(g.mem, g.queues, g.irq);
  Client c = g.ClientFor(dev);
  ASSERT_EQ(c.Version(8192), 8192u);
  ASSERT_EQ(c.Attach(1), 0u);
  ASSERT_EQ(c.Walk(1, 2, {"hello"}), 0u);
  ASSERT_EQ(c.Open(2, kDotlRdonly), 0u);
  std::string data;
  ASSERT_EQ(c.ReadData(2, 0, 100000, &data), 0u);  // bounded by the writable room (8192 - header)
  EXPECT_EQ(data, "from the host");
  EXPECT_EQ(dev.requests_served(), 5u);
  EXPECT_GE(g.irq.used.load(), 5);
  EXPECT_EQ(g.irq.needs_reset.load(), 0);

  // A reply larger than the room the driver gave is cut down to what fits.
  dir.WriteFile("big", std::string(5000, 'b'));
  Client small = g.ClientFor(dev, 100);
  ASSERT_EQ(small.Walk(1, 3, {"big"}), 0u);
  ASSERT_EQ(small.Open(3, kDotlRdonly), 0u);
  ASSERT_EQ(small.ReadData(3, 0, 4096, &data), 0u);
  EXPECT_EQ(data.size(), 100u - kIoHeaderSize);
  dev.Reset();
}

TEST(VirtioP9, BrokenChainNeedsReset) {
  ScratchDir dir;
  Guest g, fresh;
  VirtioP9 dev("share", dir.path(), false);
  dev.Activate(g.mem, g.queues, g.irq);
  g.Desc(0, 0x7fffffff0ull, 64, 0, 0);  // buffer outside guest RAM
  g.driver.Publish(0);
  dev.QueueNotify(0);
  for (int i = 0; i < 5000 && g.irq.needs_reset.load() == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(g.irq.needs_reset.load(), 1);
  EXPECT_EQ(dev.requests_served(), 0u);
  // After a reset and re-activation the device works again.
  dev.Reset();
  dev.Activate(fresh.mem, fresh.queues, fresh.irq);
  Client c = fresh.ClientFor(dev);
  EXPECT_EQ(c.Version(8192), 8192u);
}

TEST(VirtioP9, ResetClosesFids) {
  ScratchDir dir;
  Guest g;
  VirtioP9 dev("share", dir.path(), false);
  dev.Activate(g.mem, g.queues, g.irq);
  Client c = g.ClientFor(dev);
  ASSERT_EQ(c.Version(8192), 8192u);
  ASSERT_EQ(c.Attach(1), 0u);
  EXPECT_EQ(dev.SaveState().server.fids.size(), 1u);
  dev.Reset();
  VirtioP9::State s = dev.SaveState();
  EXPECT_FALSE(s.active);
  EXPECT_TRUE(s.server.fids.empty());
  EXPECT_FALSE(s.server.negotiated);
}

TEST(VirtioP9, StateRoundTrip) {
  ScratchDir dir;
  dir.WriteFile("f", "kept across restore");
  VirtioP9::State saved;
  {
    Guest g;
    VirtioP9 dev("share", dir.path(), false);
    dev.Activate(g.mem, g.queues, g.irq);
    Client c = g.ClientFor(dev);
    ASSERT_EQ(c.Version(16384), 16384u);
    ASSERT_EQ(c.Attach(1, 1000), 0u);
    ASSERT_EQ(c.Walk(1, 2, {"f"}), 0u);
    ASSERT_EQ(c.Open(2, kDotlRdonly), 0u);
    saved = dev.SaveState();
  }
  EXPECT_TRUE(saved.active);
  EXPECT_EQ(saved.next_avail, 4);
  EXPECT_EQ(saved.next_used, 4);
  EXPECT_EQ(saved.server.msize, 16384u);
  ASSERT_EQ(saved.server.fids.size(), 2u);
  EXPECT_EQ(saved.server.fids[1], (p9::Server::FidState{2, "f", 1000, true, kDotlRdonly}));

  // A new device (a restored VM): state first, then the transport activates it.
  Guest g;
  VirtioP9 dev("share", dir.path(), false);
  EXPECT_EQ(dev.RestoreState(saved), 0u);
  g.StartAt(4);  // the guest's rings carry on where they were
  dev.Activate(g.mem, g.queues, g.irq);
  EXPECT_EQ(g.queues[0].next_avail(), 4);
  Client c = g.ClientFor(dev);
  std::string data;
  ASSERT_EQ(c.ReadData(2, 0, 100, &data), 0u);
  EXPECT_EQ(data, "kept across restore");
  VirtioP9::State again = dev.SaveState();
  EXPECT_EQ(again.next_avail, 5);
  EXPECT_EQ(again.server.fids, saved.server.fids);
  dev.Reset();
}

// A device serving a scratch directory, active on a fake guest, with 9P version negotiated.
struct ActiveShare {
  ScratchDir dir;
  Guest g;  // before the device: the device (and its worker) must go first
  VirtioP9 dev{"share", dir.path(), false};
  Client client = g.ClientFor(dev);
  ActiveShare() {
    dev.Activate(g.mem, g.queues, g.irq);
    EXPECT_EQ(client.Version(8192), 8192u);
  }
  ~ActiveShare() { dev.Reset(); }
};

TEST(VirtioP9, QuiescedDeviceAnswersOnlyAfterUnquiesce) {
  ActiveShare share;
  share.dev.Quiesce();
  uint32_t attached = 1;
  std::thread guest([&] { attached = share.client.Attach(1); });  // waits for the answer
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(share.dev.requests_served(), 1u) << "a quiesced device served a request";
  share.dev.Unquiesce();
  guest.join();
  EXPECT_EQ(attached, 0u);
  EXPECT_EQ(share.dev.requests_served(), 2u);
}

TEST(VirtioP9, EncodedStateRoundTrip) {
  ActiveShare share;
  share.dir.WriteFile("f", "x");
  ASSERT_EQ(share.client.Attach(1, 7), 0u);
  ASSERT_EQ(share.client.Walk(1, 2, {"f"}), 0u);
  ByteWriter w;
  share.dev.SaveState(w);
  VirtioP9 restored("share", share.dir.path(), false);
  ByteReader r(w.data(), "9p");
  restored.RestoreState(r);
  r.ExpectEnd();
  EXPECT_EQ(restored.SaveState().server.fids, share.dev.SaveState().server.fids);
  EXPECT_EQ(restored.SaveState().next_avail, 3);
}
