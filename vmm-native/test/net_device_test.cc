// The virtio-net device without a guest: a fake driver builds the rx and tx queues in fake guest
// memory, and the other end of a SOCK_SEQPACKET socketpair plays the tap (one message = one
// packet: the 12-byte header, then the frame). The device runs its own loop thread.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../src/error.h"
#include "../src/virtio/net.h"
#include "fake_memory.h"

using namespace stencil;
using stencil::testing::FakeDriverQueue;
using stencil::testing::FakeMemory;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint16_t kSize = 64;
constexpr uint16_t kNext = 1, kWrite = 2;
constexpr uint64_t kRxBase = 0, kTxBase = 0x10000, kBufs = 0x20000;
constexpr uint32_t kSlot = 0x1000;                        // one descriptor's buffer
constexpr uint64_t kBig = kBufs + 2 * kSize * uint64_t(kSlot);  // room for one oversize buffer
constexpr uint32_t kHdr = VirtioNet::kHeaderSize;
const VirtioNet::Mac kMac = {0x02, 0x53, 0x54, 0x00, 0x00, 0x01};
const VirtioNet::Mac kOtherMac = {0x02, 0x53, 0x54, 0x00, 0x00, 0x02};

std::string Frame(size_t len, int seed) {
  std::string f(len, 0);
  for (size_t i = 0; i < len; i++) f[i] = static_cast<char>(i * 31 + seed);
  return f;
}

// A header as a guest without offloads sends it, with a recognisable hdr_len so a pass-through is
// visible; num_buffers (bytes 10-11) is 0 as the spec wants on tx.
std::string Header() {
  std::string h(kHdr, 0);
  h[2] = 0x2a;
  return h;
}

// A guest and a backend peer around one device.
struct Net {
  explicit Net(const VirtioNet::Mac& mac = kMac, int sndbuf = 0) : mem(kBig + 0x20000) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    if (sndbuf) setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    peer.reset(sv[1]);
    probe.reset(dup(sv[0]));  // to look into the device's end without reading from it
    queues.emplace_back(VirtioNet::kQueueSize);
    queues.emplace_back(VirtioNet::kQueueSize);
    rx = std::make_unique<FakeDriverQueue>(mem, queues[0], kSize, kRxBase);
    tx = std::make_unique<FakeDriverQueue>(mem, queues[1], kSize, kTxBase);
    device = std::make_unique<VirtioNet>(UniqueFd(sv[0]), mac, [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(log_mu);
      log += m + "\n";
    });
  }
  ~Net() {
    if (device) device->Reset();  // stops the loop thread before the queues go
  }
  void Activate() { device->Activate(mem, queues, irq); }
  std::string Log() {
    std::lock_guard<std::mutex> lock(log_mu);
    return log;
  }
  void ExpectLogged(std::initializer_list<const char*> lines) {
    std::string got = Log();
    for (const char* line : lines) EXPECT_NE(got.find(line), std::string::npos) << "no \"" << line << "\" in\n" << got;
  }
  uint8_t* At(uint64_t addr) { return mem.bytes.data() + addr; }
  uint64_t RxBuf(uint16_t desc) { return kBufs + desc * uint64_t(kSlot); }
  uint64_t TxBuf(uint16_t desc) { return kBufs + (kSize + desc) * uint64_t(kSlot); }

  // rx: a chain of one writable buffer of `len` bytes (or header and frame split in two).
  void PostRx(uint16_t desc, uint32_t len = kHdr + 1514, bool split = false) {
    std::memset(At(RxBuf(desc)), 0xee, kSlot);
    if (split) {
      rx->Desc(desc, RxBuf(desc), kHdr, kWrite | kNext, desc + 1);
      rx->Desc(desc + 1, RxBuf(desc) + kHdr, len - kHdr, kWrite, 0);
    } else {
      rx->Desc(desc, RxBuf(desc), len, kWrite, 0);
    }
    rx->Publish(desc);
    device->QueueNotify(VirtioNet::kRxQueue);
  }
  std::string RxData(uint16_t desc, uint32_t len) { return std::string(reinterpret_cast<char*>(At(RxBuf(desc))), len); }

  // tx: each part in its own readable descriptor (4 descriptors per chain at most).
  void SendTx(const std::vector<std::string>& parts) {
    while (uint16_t(tx->avail_idx() - tx->used_idx()) >= kSize / 4) std::this_thread::yield();
    uint16_t head = (tx_next++ % (kSize / 4)) * 4;
    for (size_t i = 0; i < parts.size(); i++) {
      uint16_t d = static_cast<uint16_t>(head + i);
      std::memcpy(At(TxBuf(d)), parts[i].data(), parts[i].size());
      bool last = i + 1 == parts.size();
      tx->Desc(d, TxBuf(d), static_cast<uint32_t>(parts[i].size()), last ? 0 : kNext, last ? 0 : d + 1);
    }
    tx->Publish(head);
    device->QueueNotify(VirtioNet::kTxQueue);
  }
  void SendChain(uint16_t head) {  // descriptors already written by the test
    tx->Publish(head);
    device->QueueNotify(VirtioNet::kTxQueue);
  }

  static bool WaitUsed(const FakeDriverQueue& q, uint16_t idx, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = Clock::now() + timeout;
    while (q.used_idx() != idx) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
  }
  std::optional<std::string> PeerRecv(int timeout_ms = 5000) {
    pollfd p{peer.get(), POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    std::string buf(70000, 0);
    ssize_t n = recv(peer.get(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<size_t>(n));
    return buf;
  }
  void PeerSend(const std::string& packet) {
    ASSERT_EQ(send(peer.get(), packet.data(), packet.size(), 0), static_cast<ssize_t>(packet.size()));
  }

  FakeMemory mem;
  std::vector<Virtqueue> queues;
  std::unique_ptr<FakeDriverQueue> rx, tx;
  stencil::testing::CountingInterrupt irq;
  UniqueFd peer, probe;
  std::unique_ptr<VirtioNet> device;
  uint32_t tx_next = 0;
  std::mutex log_mu;
  std::string log;
};

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

}  // namespace

TEST(NetDevice, ConfigAndFeatures) {
  Net n;
  VirtioNet& dev = *n.device;
  EXPECT_EQ(dev.device_type(), 1u);
  EXPECT_EQ(dev.features(), kVirtioFVersion1 | (1ULL << 5) | (1ULL << 16)) << "VERSION_1, MAC, STATUS; no offloads";
  EXPECT_EQ(dev.queue_max_sizes(), (std::vector<uint16_t>{256, 256}));
  uint8_t cfg[8];
  dev.ReadConfig(0, cfg, sizeof cfg);
  EXPECT_EQ(std::memcmp(cfg, kMac.data(), 6), 0);
  EXPECT_EQ(cfg[6] | cfg[7] << 8, 1) << "VIRTIO_NET_S_LINK_UP";
  uint16_t status = 0;
  dev.ReadConfig(6, reinterpret_cast<uint8_t*>(&status), 2);
  EXPECT_EQ(status, 1);
  uint32_t past = 0xffffffff;
  dev.ReadConfig(8, reinterpret_cast<uint8_t*>(&past), 4);
  EXPECT_EQ(past, 0u) << "max_virtqueue_pairs, mtu, ... belong to features not offered";
  uint8_t straddle[4];
  dev.ReadConfig(5, straddle, 4);
  EXPECT_EQ(straddle[0], kMac[5]);
  EXPECT_EQ(straddle[3], 0);
  uint8_t junk[8] = {9, 9, 9, 9, 9, 9, 9, 9};
  dev.WriteConfig(0, junk, sizeof junk);
  dev.ReadConfig(0, cfg, sizeof cfg);
  EXPECT_EQ(std::memcmp(cfg, kMac.data(), 6), 0) << "config writes are ignored";
}

TEST(NetDevice, TxFrameReachesTheBackendWithItsHeader) {
  Net n;
  n.Activate();
  std::string frame = Frame(1000, 1);
  n.SendTx({Header(), frame.substr(0, 20), frame.substr(20)});  // header and frame split like Linux
  auto got = n.PeerRecv();
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(*got == Header() + frame) << "got " << got->size() << " bytes";
  std::string small = Frame(60, 2);
  n.SendTx({Header() + small});  // all in one descriptor
  got = n.PeerRecv();
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(*got == Header() + small);
  ASSERT_TRUE(Net::WaitUsed(*n.tx, 2));
  EXPECT_EQ(n.tx->used_id(0), 0u);
  EXPECT_EQ(n.tx->used_len(0), 0u) << "tx chains are returned with nothing written";
  EXPECT_EQ(n.tx->used_id(1), 4u);
  EXPECT_GT(n.irq.used.load(), 0);
  EXPECT_EQ(n.irq.needs_reset.load(), 0);
}

TEST(NetDevice, RxPacketLandsInAPostedBuffer) {
  Net n;
  n.Activate();
  n.PostRx(0);
  n.PostRx(2, kHdr + 1514, /*split=*/true);
  std::string a = Frame(1514, 3), b = Frame(64, 4);
  n.PeerSend(Header() + a);
  ASSERT_TRUE(Net::WaitUsed(*n.rx, 1));
  EXPECT_EQ(n.rx->used_id(0), 0u);
  EXPECT_EQ(n.rx->used_len(0), kHdr + a.size()) << "used length is header + frame";
  std::string want = Header();
  want[10] = 1;  // num_buffers = 1 without MRG_RXBUF
  EXPECT_TRUE(n.RxData(0, kHdr + a.size()) == want + a);
  n.PeerSend(Header() + b);
  ASSERT_TRUE(Net::WaitUsed(*n.rx, 2));
  EXPECT_EQ(n.rx->used_id(1), 2u);
  EXPECT_EQ(n.rx->used_len(1), kHdr + b.size());
  EXPECT_TRUE(n.RxData(2, kHdr + b.size()) == want + b) << "scattered across the chain's two buffers";
  EXPECT_GT(n.irq.used.load(), 0);
  EXPECT_EQ(n.irq.needs_reset.load(), 0);
}

TEST(NetDevice, RxWithoutBuffersLeavesThePacketInTheBackendAndSleeps) {
  Net n;
  n.Activate();
  std::string packet = Header() + Frame(200, 5);
  n.PeerSend(packet);
  double cpu = CpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LT(CpuSeconds() - cpu, 0.1) << "the loop spins on a readable backend it cannot serve";
  char peek[512];
  EXPECT_EQ(recv(n.probe.get(), peek, sizeof peek, MSG_PEEK | MSG_DONTWAIT), static_cast<ssize_t>(packet.size()))
      << "the packet was taken from the backend with no buffer to put it in";
  EXPECT_EQ(n.rx->used_idx(), 0);
  n.PostRx(0);
  ASSERT_TRUE(Net::WaitUsed(*n.rx, 1));
  EXPECT_EQ(n.rx->used_len(0), packet.size());
  EXPECT_TRUE(n.RxData(0, kHdr + 200).substr(kHdr) == packet.substr(kHdr));
}

TEST(NetDevice, OversizeAndRuntRxPacketsAreDroppedAndTheNextDelivered) {
  Net n;
  n.Activate();
  n.PostRx(0, kHdr + 100);
  n.PeerSend(Header() + Frame(500, 6));  // larger than the guest's buffer
  n.PeerSend(std::string(5, 'x'));       // shorter than a header
  std::string fits = Header() + Frame(100, 7);  // exactly fills the buffer
  n.PeerSend(fits);
  ASSERT_TRUE(Net::WaitUsed(*n.rx, 1));
  EXPECT_EQ(n.rx->used_len(0), fits.size());
  EXPECT_TRUE(n.RxData(0, kHdr + 100).substr(kHdr) == fits.substr(kHdr));
  n.ExpectLogged({"dropped an rx packet of 512 bytes: larger than the guest's 112-byte buffer",
                  "dropped an rx packet of 5 bytes: shorter than the header"});
  EXPECT_EQ(n.irq.needs_reset.load(), 0);
}

TEST(NetDevice, MalformedTxChainsAreDroppedAndReturned) {
  Net n;
  n.Activate();
  n.SendTx({std::string(8, 'a')});  // shorter than the header
  // A header, then a device-writable buffer: not a tx packet.
  n.tx->Desc(4, n.TxBuf(4), kHdr, kNext, 5);
  n.tx->Desc(5, n.TxBuf(5), 64, kWrite, 0);
  n.tx_next++;
  n.SendChain(4);
  // One byte over the largest packet, in a buffer of its own.
  n.tx->Desc(8, kBig, VirtioNet::kMaxPacket + 1, 0, 0);
  n.tx_next++;
  n.SendChain(8);
  // The largest packet passes; so does a frame after all of the above.
  std::string largest = Header() + Frame(VirtioNet::kMaxPacket - kHdr, 8);
  std::memcpy(n.At(kBig), largest.data(), largest.size());
  n.tx->Desc(12, kBig, VirtioNet::kMaxPacket, 0, 0);
  n.tx_next++;
  n.SendChain(12);
  std::string frame = Header() + Frame(60, 9);
  n.SendTx({frame});
  ASSERT_TRUE(Net::WaitUsed(*n.tx, 5));
  for (uint16_t i = 0; i < 5; i++) EXPECT_EQ(n.tx->used_len(i), 0u);
  auto got = n.PeerRecv();
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(*got == largest) << "got " << got->size() << " bytes";
  got = n.PeerRecv();
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(*got == frame);
  EXPECT_FALSE(n.PeerRecv(100).has_value()) << "a malformed chain reached the backend";
  n.ExpectLogged({"dropped a tx packet of 8 bytes", "device-writable", "dropped a tx packet of 65551 bytes"});
  EXPECT_EQ(n.irq.needs_reset.load(), 0);
}

TEST(NetDevice, TxWaitsForRoomInTheBackendAndLosesNothing) {
  Net n(kMac, /*sndbuf=*/4096);  // room for a frame or two
  n.Activate();
  constexpr int kFrames = 40;
  std::vector<std::string> got;
  std::thread reader([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the backend fill up first
    while (got.size() < kFrames) {
      auto p = n.PeerRecv();
      if (!p) break;
      got.push_back(*p);
    }
  });
  for (int i = 0; i < kFrames; i++) n.SendTx({Header(), Frame(1400, i)});
  reader.join();
  ASSERT_EQ(got.size(), static_cast<size_t>(kFrames));
  for (int i = 0; i < kFrames; i++) EXPECT_TRUE(got[i] == Header() + Frame(1400, i)) << "frame " << i;
  EXPECT_TRUE(Net::WaitUsed(*n.tx, kFrames));
  EXPECT_EQ(n.Log().find("dropped"), std::string::npos) << n.Log();
}

TEST(NetDevice, BackendHangupStopsRxAndStillReturnsTx) {
  Net n;
  n.Activate();
  n.PostRx(0);
  n.peer.reset();
  n.SendTx({Header() + Frame(60, 1)});
  ASSERT_TRUE(Net::WaitUsed(*n.tx, 1)) << "a tx chain is returned even with nobody to send it to";
  double cpu = CpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_LT(CpuSeconds() - cpu, 0.1) << "the loop spins on a hung-up backend";
  EXPECT_EQ(n.rx->used_idx(), 0);
  n.ExpectLogged({"no more packets"});
  EXPECT_EQ(n.irq.needs_reset.load(), 0);
}

TEST(NetDevice, ABrokenRingMarksTheDeviceNeedsResetAndStopsServingIt) {
  Net n;
  n.Activate();
  n.rx->Desc(0, n.mem.bytes.size() - 8, 64, kWrite, 0);  // runs past the end of guest RAM
  n.rx->Publish(0);
  n.device->QueueNotify(VirtioNet::kRxQueue);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (n.irq.needs_reset.load() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(n.irq.needs_reset.load(), 1);
  n.PeerSend(Header() + Frame(60, 1));
  n.SendTx({Header() + Frame(60, 2)});
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(n.rx->used_idx(), 0);
  EXPECT_EQ(n.tx->used_idx(), 0) << "a broken device waits for the driver's reset";
  n.ExpectLogged({"device needs reset"});
}

TEST(NetDevice, QuiesceSaveAndRestoreContinueTheQueues) {
  std::vector<uint8_t> saved;
  VirtioNet::State s;
  {
    Net n;
    n.Activate();
    n.PostRx(0);
    n.PostRx(1);
    n.SendTx({Header() + Frame(60, 1)});
    n.SendTx({Header() + Frame(60, 2)});
    n.PeerSend(Header() + Frame(70, 3));
    ASSERT_TRUE(Net::WaitUsed(*n.rx, 1));
    ASSERT_TRUE(Net::WaitUsed(*n.tx, 2));
    ByteWriter running;
    try {
      n.device->SaveState(running);
      ADD_FAILURE() << "SaveState while running";
    } catch (const VmmError& e) {
      EXPECT_EQ(e.code(), ErrorCode::kState);
    }
    n.device->Quiesce();
    // While quiesced nothing touches guest memory: a packet and a buffer wait.
    n.PeerSend(Header() + Frame(80, 4));
    n.PostRx(2);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(n.rx->used_idx(), 1);
    s = n.device->SaveState();
    ByteWriter out;
    n.device->SaveState(out);
    saved = out.Take();
    EXPECT_TRUE(s.activated);
    EXPECT_EQ(s.mac, kMac);
    EXPECT_EQ(s.next_used[VirtioNet::kRxQueue], 1);
    EXPECT_EQ(s.next_avail[VirtioNet::kRxQueue], 1) << "the held rx chain goes back to the guest's side";
    EXPECT_EQ(s.next_avail[VirtioNet::kTxQueue], 2);
    EXPECT_EQ(s.next_used[VirtioNet::kTxQueue], 2);
    n.device->Unquiesce();  // the original goes on where it stopped
    ASSERT_TRUE(Net::WaitUsed(*n.rx, 2));
    EXPECT_EQ(n.rx->used_len(1), kHdr + 80u);
  }

  // A fresh device (a clone, with its own MAC) on rings where the snapshot left them.
  Net c(kOtherMac);
  ByteReader truncated(saved.data(), saved.size() - 1, "net state");
  try {
    c.device->RestoreState(truncated);
    ADD_FAILURE() << "a truncated state was accepted";
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kSnapshot);
  }
  ByteReader in(saved, "net state");
  c.device->RestoreState(in);
  EXPECT_EQ(in.remaining(), 0u);
  c.rx->SetRingIndexes(s.next_avail[0], s.next_used[0]);
  c.tx->SetRingIndexes(s.next_avail[1], s.next_used[1]);
  c.tx_next = 2;
  c.Activate();
  uint8_t mac[6];
  c.device->ReadConfig(0, mac, sizeof mac);
  EXPECT_EQ(std::memcmp(mac, kOtherMac.data(), 6), 0) << "a restored device keeps its own MAC";
  c.PostRx(5);
  c.PeerSend(Header() + Frame(90, 5));
  ASSERT_TRUE(Net::WaitUsed(*c.rx, 2));
  EXPECT_EQ(c.rx->used_id(1), 5u);
  EXPECT_EQ(c.rx->used_len(1), kHdr + 90u);
  c.SendTx({Header() + Frame(60, 6)});
  auto got = c.PeerRecv();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size(), kHdr + 60u);
  ASSERT_TRUE(Net::WaitUsed(*c.tx, 3));
  EXPECT_EQ(c.irq.config.load(), 0) << "nothing to announce after a restore";
  EXPECT_EQ(c.irq.needs_reset.load(), 0);
}

TEST(NetDevice, ResetStopsTheDeviceAndAnotherActivationWorks) {
  Net n;
  n.Activate();
  n.PostRx(0);
  n.device->Reset();
  std::string packet = Header() + Frame(60, 1);
  n.PeerSend(packet);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(n.rx->used_idx(), 0) << "a reset device served the queue";
  // The driver starts over with fresh queues.
  for (auto& q : n.queues) q.Reset();
  n.rx = std::make_unique<FakeDriverQueue>(n.mem, n.queues[0], kSize, kRxBase);
  n.tx = std::make_unique<FakeDriverQueue>(n.mem, n.queues[1], kSize, kTxBase);
  n.mem.Put<uint16_t>(kRxBase + FakeDriverQueue::kAvail + 2, 0);
  n.Activate();
  n.PostRx(0);
  ASSERT_TRUE(Net::WaitUsed(*n.rx, 1));
  EXPECT_EQ(n.rx->used_len(0), packet.size()) << "the packet waited in the backend";
}

TEST(NetDevice, WithoutABackendDropsTxAndNeverFillsRx) {
  Net n;
  std::mutex mu;
  std::string log;
  n.device = std::make_unique<VirtioNet>(UniqueFd(), kMac, [&](const std::string& m) {
    std::lock_guard<std::mutex> lock(mu);
    log += m + "\n";
  });
  EXPECT_FALSE(n.device->has_backend());
  n.Activate();
  n.PostRx(0);
  n.SendTx({Header() + Frame(60, 1)});
  ASSERT_TRUE(Net::WaitUsed(*n.tx, 1)) << "a tx frame with nowhere to go is returned to the guest";
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(n.rx->used_idx(), 0) << "nothing is ever received";
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(log, "") << "an unplugged NIC is not an error";
}

// The fuzzer's way in: a device quiesced before activation runs its loop on the caller's thread,
// so one pass serves both queues without any waiting; a running device refuses it.
TEST(NetDevice, RunQuiescedLoopServesBothQueuesOnTheCallersThread) {
  Net n;
  n.device->Quiesce();
  n.Activate();
  n.PostRx(0);
  n.PeerSend(Header() + Frame(60, 1));
  n.SendTx({Header(), Frame(60, 2)});
  n.device->RunQuiescedLoop(1);
  EXPECT_EQ(n.rx->used_idx(), 1) << "the waiting packet filled the posted buffer in that pass";
  EXPECT_EQ(n.tx->used_idx(), 1);
  auto sent = n.PeerRecv(0);
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(*sent, Header() + Frame(60, 2));
  n.device->Unquiesce();
  EXPECT_THROW(n.device->RunQuiescedLoop(1), VmmError);
}
