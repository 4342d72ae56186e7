// libFuzzer target: virtio-net as a hostile driver and a hostile network drive it. The input is
// the two queues' layout, packets waiting in the backend (what the wire sends the guest), and
// guest RAM holding the descriptor tables, rings and buffers. The device is activated quiesced
// and its loop run on this thread (deterministic, no sleeping), both queues notified: it sends
// the tx chains it finds and fills rx chains with the waiting packets. What reaches the wire must
// be one whole packet of 12 to 65550 bytes each; everything stays inside guest RAM (ASan); the
// device's saved state then restores into a fresh one.
//
// Input: u8 flags (bit 0: a backend; bit 1: rings at fixed offsets, else at addresses read from
// the first 48 bytes of RAM), le16 rx queue size, le16 tx queue size, u8 packet count, then per
// packet le16 length and its bytes, then guest RAM (64 KiB at most).
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "../src/error.h"
#include "../src/snapshot/bytes.h"
#include "../src/virtio/net.h"
#include "../test/fake_memory.h"
#include "seeds.h"

namespace {

constexpr size_t kRam = 64 << 10;
constexpr uint64_t kFixed[2][3] = {{0x1000, 0x2000, 0x3000}, {0x4000, 0x5000, 0x6000}};  // rx, tx
constexpr int kLoopRounds = 4;  // a round serves up to 256 chains per queue; the queues hold 256

using stencil::VirtioNet;

// A queue of 8 each: two rx buffers of 2 KiB posted; one tx chain (header, then a 60-byte
// frame) and one tx chain of a header alone; one packet waiting on the wire.
std::vector<stencil::fuzz::Seed> Seeds() {
  using stencil::fuzz::PutAt;
  stencil::fuzz::Seed s{3};
  uint16_t size = 8;
  PutAt(s, 1, &size, 2), PutAt(s, 3, &size, 2);
  s.push_back(1);  // one packet
  std::vector<uint8_t> packet(VirtioNet::kHeaderSize + 64, 0xab);
  uint16_t len = static_cast<uint16_t>(packet.size());
  PutAt(s, s.size(), &len, 2);
  s.insert(s.end(), packet.begin(), packet.end());
  size_t ram = s.size();
  auto desc = [&](int q, int i, uint64_t addr, uint32_t n, uint16_t f, uint16_t next) {
    size_t at = ram + kFixed[q][0] + i * 16;
    PutAt(s, at, &addr, 8), PutAt(s, at + 8, &n, 4), PutAt(s, at + 12, &f, 2), PutAt(s, at + 14, &next, 2);
  };
  auto publish = [&](int q, std::vector<uint16_t> heads) {
    uint16_t idx = static_cast<uint16_t>(heads.size());
    PutAt(s, ram + kFixed[q][1] + 2, &idx, 2);
    for (size_t i = 0; i < heads.size(); i++) PutAt(s, ram + kFixed[q][1] + 4 + i * 2, &heads[i], 2);
  };
  desc(0, 0, 0x8000, 2048, 2 /* WRITE */, 0);
  desc(0, 1, 0x8800, 2048, 2, 0);
  publish(0, {0, 1});
  desc(1, 0, 0x9000, VirtioNet::kHeaderSize, 1 /* NEXT */, 1);
  desc(1, 1, 0x9100, 60, 0, 0);
  desc(1, 2, 0x9200, VirtioNet::kHeaderSize, 0, 0);
  publish(1, {0, 2});
  s.resize(ram + 0xa000);
  stencil::fuzz::Seed loose = s;
  loose[0] = 1;  // ring addresses from the first bytes of RAM instead
  PutAt(loose, ram, kFixed, sizeof kFixed);
  return {s, loose};
}

// What the device wrote to the wire: whole packets within the bounds it promises.
void CheckWire(int peer) {
  std::vector<uint8_t> buf(VirtioNet::kMaxPacket + 1);
  for (;;) {
    ssize_t n = recv(peer, buf.data(), buf.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) return;
    if (n < static_cast<ssize_t>(VirtioNet::kHeaderSize) || n > static_cast<ssize_t>(VirtioNet::kMaxPacket)) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stencil::fuzz::WriteSeedsIfAsked(Seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  bool with_backend = data[0] & 1, fixed_layout = data[0] & 2;
  uint16_t sizes[2];
  std::memcpy(sizes, data + 1, 4);
  size_t packets = data[5] % 17;
  data += 6, size -= 6;

  int fds[2] = {-1, -1};
  if (with_backend && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0) __builtin_trap();
  for (; packets > 0 && size >= 2; packets--) {
    uint16_t len;
    std::memcpy(&len, data, 2);
    data += 2, size -= 2;
    len = static_cast<uint16_t>(len < size ? len : size);
    if (fds[1] >= 0 && send(fds[1], data, len, MSG_DONTWAIT) < 0) {
      // the backend's buffer is full: the wire dropped it
    }
    data += len, size -= len;
  }

  stencil::testing::FakeMemory mem(kRam);
  std::memcpy(mem.bytes.data(), data, size < kRam ? size : kRam);
  std::vector<stencil::Virtqueue> queues;
  for (int q = 0; q < 2; q++) {
    queues.emplace_back(VirtioNet::kQueueSize);
    queues[q].set_size(sizes[q]);
    uint64_t addrs[3];
    if (fixed_layout) std::memcpy(addrs, kFixed[q], sizeof addrs);
    else std::memcpy(addrs, mem.bytes.data() + q * sizeof addrs, sizeof addrs);
    queues[q].desc_addr = addrs[0], queues[q].avail_addr = addrs[1], queues[q].used_addr = addrs[2];
    std::string why;
    if (!queues[q].Validate(mem, &why)) {  // the transport refuses DRIVER_OK for such a queue
      if (fds[0] >= 0) close(fds[0]), close(fds[1]);
      return 0;
    }
    queues[q].set_ready(true);
  }

  VirtioNet::Mac mac = {2, 0, 0, 0, 0, 1};
  stencil::testing::CountingInterrupt irq;
  std::vector<uint8_t> saved;
  {
    VirtioNet nic(stencil::UniqueFd(fds[0]), mac, [](const std::string&) {});
    nic.Quiesce();
    nic.Activate(mem, queues, irq);
    nic.QueueNotify(VirtioNet::kTxQueue);
    nic.QueueNotify(VirtioNet::kRxQueue);
    nic.RunQuiescedLoop(kLoopRounds);
    if (fds[1] >= 0) CheckWire(fds[1]);
    stencil::ByteWriter out;
    nic.SaveState(out);
    saved = out.data();
  }
  if (fds[1] >= 0) close(fds[1]);
  stencil::ByteReader in(saved, "the fuzzed NIC's own state");
  VirtioNet restored(stencil::UniqueFd(), mac, [](const std::string&) {});
  restored.RestoreState(in);  // its own state always restores: a throw is a crash
  return 0;
}
