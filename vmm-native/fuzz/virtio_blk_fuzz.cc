// libFuzzer target: virtio-blk as a hostile driver drives it. The input is the request queue's
// layout and guest RAM holding its descriptor table, rings, request headers, data buffers and
// status bytes: requests of any type, sector and length, in chains of any shape. The device is
// activated on a 64 KiB disk image (read-write or read-only), notified, and drained (its worker
// serves every request); every request gets a status or the device asks for a reset, nothing is
// read or written outside guest RAM or the image (ASan, and the image's size), and the device's
// saved state restores into a fresh one on the same image.
//
// Input: u8 flags (bit 0: a read-only disk; bit 1: rings at fixed offsets, else at addresses read
// from the first 24 bytes of RAM), le16 queue size, then guest RAM (64 KiB at most).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "../src/error.h"
#include "../src/snapshot/bytes.h"
#include "../src/virtio/blk.h"
#include "../test/fake_memory.h"
#include "seeds.h"

namespace {

constexpr size_t kRam = 64 << 10;
constexpr uint64_t kDiskBytes = 64 << 10;
constexpr uint64_t kFixed[3] = {0x1000, 0x2000, 0x3000};  // descriptors, avail, used

std::string DiskImage() {
  static const std::string path = [] {
    std::string p = stencil::fuzz::ScratchDirRemovedAtExit("stencil-fuzz-blk") + "/disk.img";
    std::ofstream(p, std::ios::binary).write(std::string(kDiskBytes, '\0').data(), kDiskBytes);
    return p;
  }();
  return path;
}

// A queue of 8: a read of sector 1 (header, 512-byte buffer, status), a write of sector 2 (header
// and data readable, status), a flush, a GET_ID, and a read past the disk's end.
std::vector<stencil::fuzz::Seed> Seeds() {
  using stencil::fuzz::PutAt;
  stencil::fuzz::Seed s{2};
  uint16_t size = 8;
  PutAt(s, 1, &size, 2);
  size_t ram = s.size();
  auto desc = [&](int i, uint64_t addr, uint32_t n, uint16_t flags, uint16_t next) {
    size_t at = ram + kFixed[0] + i * 16;
    PutAt(s, at, &addr, 8), PutAt(s, at + 8, &n, 4), PutAt(s, at + 12, &flags, 2), PutAt(s, at + 14, &next, 2);
  };
  auto header = [&](uint64_t at, uint32_t type, uint64_t sector) {
    uint32_t reserved = 0;
    PutAt(s, ram + at, &type, 4), PutAt(s, ram + at + 4, &reserved, 4), PutAt(s, ram + at + 8, &sector, 8);
  };
  constexpr uint16_t kNext = 1, kWrite = 2;
  header(0x4000, 0, 1);  // read sector 1
  desc(0, 0x4000, 16, kNext, 1), desc(1, 0x5000, 512, kNext | kWrite, 2), desc(2, 0x4010, 1, kWrite, 0);
  header(0x4100, 1, 2);  // write sector 2
  desc(3, 0x4100, 16, kNext, 4), desc(4, 0x6000, 512, kNext, 5), desc(5, 0x4110, 1, kWrite, 0);
  header(0x4200, 4, 0);  // flush
  desc(6, 0x4200, 16, kNext, 7), desc(7, 0x4210, 1, kWrite, 0);
  uint16_t idx = 3;
  uint16_t heads[3] = {0, 3, 6};
  PutAt(s, ram + kFixed[1] + 2, &idx, 2), PutAt(s, ram + kFixed[1] + 4, heads, sizeof heads);
  s.resize(ram + 0x7000);
  stencil::fuzz::Seed get_id = s;
  uint32_t type = 8;
  PutAt(get_id, ram + 0x4000, &type, 4);  // the first chain asks for the serial instead
  stencil::fuzz::Seed past_end = s;
  uint64_t sector = kDiskBytes / 512;
  PutAt(past_end, ram + 0x4008, &sector, 8);
  stencil::fuzz::Seed loose = s;
  loose[0] = 1;  // read-only, ring addresses from the first bytes of RAM
  PutAt(loose, ram, kFixed, sizeof kFixed);
  return {s, get_id, past_end, loose};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stencil::fuzz::WriteSeedsIfAsked(Seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  bool read_only = data[0] & 1, fixed_layout = data[0] & 2;
  uint16_t queue_size;
  std::memcpy(&queue_size, data + 1, 2);
  data += 3, size -= 3;

  stencil::testing::FakeMemory mem(kRam);
  std::memcpy(mem.bytes.data(), data, size < kRam ? size : kRam);
  std::vector<stencil::Virtqueue> queues;
  queues.emplace_back(256);
  queues[0].set_size(queue_size);
  uint64_t addrs[3];
  if (fixed_layout) std::memcpy(addrs, kFixed, sizeof addrs);
  else std::memcpy(addrs, mem.bytes.data(), sizeof addrs);
  queues[0].desc_addr = addrs[0], queues[0].avail_addr = addrs[1], queues[0].used_addr = addrs[2];
  std::string why;
  if (!queues[0].Validate(mem, &why)) return 0;  // the transport refuses DRIVER_OK for such a queue
  queues[0].set_ready(true);

  stencil::BlockDeviceConfig config{DiskImage(), read_only, "fuzz-disk"};
  stencil::testing::CountingInterrupt irq;
  std::vector<uint8_t> saved;
  {
    stencil::VirtioBlk blk(config);
    blk.Activate(mem, queues, irq);
    blk.QueueNotify(0);
    blk.Drain();
    blk.Quiesce();
    stencil::ByteWriter out;
    blk.SaveState(out);
    saved = out.data();
    blk.Reset();
  }
  struct stat st{};
  if (stat(config.path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != kDiskBytes) __builtin_trap();  // writes stay inside the image
  stencil::ByteReader in(saved, "the fuzzed disk's own state");
  stencil::VirtioBlk restored(config);
  restored.RestoreState(in);  // its own state always restores: a throw is a crash
  return 0;
}
