// libFuzzer target: split virtqueues as a hostile driver lays them out. The input is guest RAM
// (descriptor table, rings and buffers all in it) plus a queue size and an available index; the
// device side pops every chain it is offered, gathers and scatters across its buffers and returns
// it, and reads each chain as a vsock packet would be read (header, checks, an rx reply written
// into it). Any chain is either served inside guest RAM or refused with VirtqueueError.
#include <cstdint>
#include <cstring>
#include <vector>

#include "../src/virtio/queue.h"
#include "../src/virtio/vsock/packet.h"
#include "../test/fake_memory.h"
#include "seeds.h"

namespace {

// 64 KiB of guest RAM: descriptors at 0x1000, avail at 0x2000, used at 0x3000 (the fuzzer may
// still point buffers and chains anywhere, inside RAM or not).
constexpr size_t kRam = 64 << 10;

using FuzzMemory = stencil::testing::FakeMemory;

// A queue of 8 at the usual offsets with two chains: a vsock REQUEST header (readable) then a
// writable buffer, and a single readable buffer.
std::vector<stencil::fuzz::Seed> Seeds() {
  using stencil::fuzz::PutAt;
  stencil::fuzz::Seed s;
  uint16_t size = 8;
  PutAt(s, 0, &size, 2);
  uint8_t flags[2] = {1, 0};
  PutAt(s, 2, flags, 2);
  auto desc = [&](int i, uint64_t addr, uint32_t len, uint16_t f, uint16_t next) {
    size_t at = 4 + 0x1000 + i * 16;
    PutAt(s, at, &addr, 8), PutAt(s, at + 8, &len, 4), PutAt(s, at + 12, &f, 2), PutAt(s, at + 14, &next, 2);
  };
  desc(0, 0x4000, stencil::vsock::kHeaderSize, 1 /* NEXT */, 1);
  desc(1, 0x5000, 512, 2 /* WRITE */, 0);
  desc(2, 0x6000, 100, 0, 0);
  uint16_t avail[4] = {0, 2, 0, 2};  // flags, idx, ring[0], ring[1]
  PutAt(s, 4 + 0x2000, avail, sizeof avail);
  stencil::vsock::Header h;
  h.src_cid = 3, h.dst_cid = 2, h.src_port = 1024, h.dst_port = 52, h.op = stencil::vsock::kOpRequest;
  uint8_t wire[stencil::vsock::kHeaderSize];
  stencil::vsock::EncodeHeader(h, wire);
  PutAt(s, 4 + 0x4000, wire, sizeof wire);
  s.resize(4 + 0x7000);
  stencil::fuzz::Seed loose = s;
  loose[2] = 0;  // ring addresses from the first bytes of RAM instead
  uint64_t addrs[3] = {0x1000, 0x2000, 0x3000};
  PutAt(loose, 4, addrs, sizeof addrs);
  return {s, loose};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stencil::fuzz::WriteSeedsIfAsked(Seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint16_t queue_size;
  std::memcpy(&queue_size, data, 2);
  uint16_t max_size = 256;
  bool fixed_layout = data[2] & 1;  // rings where the driver says, or at the usual offsets
  data += 4, size -= 4;

  FuzzMemory mem(kRam);
  std::memcpy(mem.bytes.data(), data, size < kRam ? size : kRam);
  stencil::Virtqueue q(max_size);
  q.set_size(queue_size);
  if (fixed_layout) {
    q.desc_addr = 0x1000, q.avail_addr = 0x2000, q.used_addr = 0x3000;
  } else {
    uint64_t addrs[3];
    std::memcpy(addrs, mem.bytes.data(), sizeof addrs);
    q.desc_addr = addrs[0], q.avail_addr = addrs[1], q.used_addr = addrs[2];
  }
  std::string why;
  if (!q.Validate(mem, &why)) return 0;
  q.set_ready(true);

  std::vector<uint8_t> scratch(kRam);
  for (int served = 0; served < 512; served++) {
    std::optional<stencil::DescriptorChain> chain;
    try {
      chain = q.Pop(mem);
    } catch (const stencil::VirtqueueError&) {
      return 0;  // the device marks itself NEEDS_RESET
    }
    if (!chain) break;
    uint64_t in = chain->CopyFromReadable(scratch.data(), scratch.size());
    uint64_t room = chain->writable_bytes();
    uint64_t out = chain->CopyToWritable(scratch.data(), room < in ? room : in, in % 3);
    if (auto header = stencil::vsock::ReadHeader(*chain)) {
      stencil::vsock::CheckTxHeader(*header, 3, chain->readable_bytes() - stencil::vsock::kHeaderSize);
      stencil::vsock::Describe(*header);
      stencil::vsock::Header reply = stencil::vsock::ReplyTo(*header, stencil::vsock::kOpRw);
      uint32_t capacity = stencil::vsock::RxPayloadCapacity(*chain);
      reply.len = capacity < in ? capacity : static_cast<uint32_t>(in);
      if (chain->writable_bytes() >= stencil::vsock::kHeaderSize) stencil::vsock::WritePacket(*chain, reply, scratch.data());
    }
    q.NeedsInterrupt(mem);
    q.PushUsed(mem, chain->head, static_cast<uint32_t>(out));
  }
  return 0;
}
