// libFuzzer target: what a hostile guest does to the devices through their registers, and what a
// hostile snapshot or migration stream holds as their saved state. The first byte picks:
//   registers: up to 255 accesses (offset, width, value) to the serial port, the i8042, the ACPI PM block
//     and the virtio-mmio transport of virtio-rng, whose queue the driver lays out in guest RAM
//     (also from the input) and notifies, so the device serves whatever chains it finds;
//   state: the input as one device's saved state (serial, i8042, ACPI PM, virtio-mmio with rng or
//     with a NIC that has no backend), restored, then driven a little through its registers.
// Every access is answered; every state restores or is refused with a VmmError.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "../src/devices/acpi_pm.h"
#include "../src/devices/i8042.h"
#include "../src/devices/serial.h"
#include "../src/error.h"
#include "../src/snapshot/bytes.h"
#include "../src/virtio/mmio.h"
#include "../src/virtio/net.h"
#include "../src/virtio/rng.h"
#include "../test/fake_memory.h"
#include "seeds.h"

namespace {

constexpr size_t kRam = 32 << 10;

using FuzzMemory = stencil::testing::FakeMemory;

// One access: u8 device (0 serial, 1 i8042, 2 ACPI PM, 3+ virtio-mmio), u16 offset, u8 width
// (1, 2 or 4; bit 7: a read), u32 value.
constexpr size_t kAccess = 8;

void Access(stencil::BusDevice& d, uint64_t window, const uint8_t* a) {
  uint16_t offset;
  uint32_t value;
  std::memcpy(&offset, a + 1, 2);
  std::memcpy(&value, a + 4, 4);
  uint32_t width = a[3] & 7;
  if (width != 1 && width != 2 && width != 4) width = 4;
  uint8_t buf[4];
  std::memcpy(buf, &value, 4);
  if (a[3] & 0x80) d.Read(offset % window, buf, width);
  else d.Write(offset % window, buf, width);
}

// u8 number of accesses, the accesses, then guest RAM (the rings and buffers the driver points
// the queue at): the rest of the input.
void Registers(const uint8_t* data, size_t size) {
  if (size < 1) return;
  size_t accesses = std::min<size_t>(data[0], (size - 1) / kAccess);
  data++, size--;
  FuzzMemory mem(kRam);
  size_t ram = size - accesses * kAccess;
  std::memcpy(mem.bytes.data(), data + accesses * kAccess, std::min(ram, kRam));
  stencil::Serial serial(nullptr, nullptr);
  stencil::I8042 i8042([] {});
  stencil::AcpiPm pm([] {});
  stencil::VirtioMmio rng(std::make_unique<stencil::VirtioRng>(), mem, nullptr);
  for (; accesses > 0; data += kAccess, accesses--) {
    switch (data[0] % 4) {
      case 0: Access(serial, 8, data); break;
      case 1: Access(i8042, 5, data); break;
      case 2: Access(pm, 8, data); break;
      default: Access(rng, 0x1000, data); break;
    }
  }
}

void State(uint8_t which, const uint8_t* data, size_t size) {
  FuzzMemory mem(kRam);
  std::vector<uint8_t> bytes(data, data + size);
  stencil::ByteReader in(bytes, "the fuzzer's device state");
  try {
    switch (which % 5) {
      case 0: stencil::Serial(nullptr, nullptr).RestoreState(in); break;
      case 1: stencil::I8042([] {}).RestoreState(in); break;
      case 2: stencil::AcpiPm([] {}).RestoreState(in); break;
      case 3: {
        stencil::VirtioMmio rng(std::make_unique<stencil::VirtioRng>(), mem, nullptr);
        rng.RestoreState(in);
        uint32_t queue = 0;
        rng.Write(0x50, reinterpret_cast<uint8_t*>(&queue), 4);  // a notify on the restored queue
        break;
      }
      default: {
        stencil::VirtioNet::Mac mac = {2, 0, 0, 0, 0, 1};
        stencil::VirtioMmio nic(std::make_unique<stencil::VirtioNet>(stencil::UniqueFd(), mac), mem, nullptr);
        nic.RestoreState(in);
        uint32_t status = 0;
        nic.Read(0x70, reinterpret_cast<uint8_t*>(&status), 4);
        break;
      }
    }
  } catch (const stencil::VmmError&) {
  }
}

// Register seeds: the virtio-rng driver's bring-up (status, features, a queue of 16 at 0x1000,
// 0x2000, 0x3000, ready, DRIVER_OK), one writable descriptor published and notified, then a few
// serial and i8042 accesses. State seeds: each device's own SaveState after some use.
std::vector<stencil::fuzz::Seed> Seeds() {
  std::vector<stencil::fuzz::Seed> seeds;
  stencil::fuzz::Seed regs{0, 0};  // mode, number of accesses (set below)
  auto access = [&](uint8_t dev, uint16_t off, uint8_t width, uint32_t value) {
    regs.push_back(dev);
    stencil::fuzz::Put(regs, off);
    regs.push_back(width);
    stencil::fuzz::Put(regs, value);
  };
  for (auto [off, value] : std::vector<std::pair<uint16_t, uint32_t>>{
           {0x70, 1}, {0x70, 3}, {0x24, 1}, {0x20, 1}, {0x70, 11}, {0x30, 0}, {0x38, 16}, {0x80, 0x1000}, {0x90, 0x2000}, {0xa0, 0x3000},
           {0x44, 1}, {0x70, 15}, {0x50, 0}})
    access(3, off, 4, value);
  access(0, 3, 1, 0x80), access(0, 0, 1, 3), access(0, 3, 1, 3), access(0, 0, 1, 'x'), access(1, 4, 1, 0x20), access(1, 0, 0x81, 0);
  regs[1] = static_cast<uint8_t>((regs.size() - 2) / kAccess);
  // Guest RAM, after the accesses.
  stencil::fuzz::Seed ram(0x5000, 0);
  uint64_t addr = 0x4000;
  uint32_t len = 64;
  uint16_t flags = 2, idx = 1;
  std::memcpy(&ram[0x1000], &addr, 8), std::memcpy(&ram[0x1008], &len, 4), std::memcpy(&ram[0x100c], &flags, 2);
  std::memcpy(&ram[0x2002], &idx, 2);
  regs.insert(regs.end(), ram.begin(), ram.end());
  seeds.push_back(regs);

  auto state_seed = [&](uint8_t which, stencil::BusDevice& d) {
    stencil::ByteWriter w;
    d.SaveState(w);
    stencil::fuzz::Seed s{static_cast<uint8_t>(1), which};
    s.insert(s.end(), w.data().begin(), w.data().end());
    seeds.push_back(s);
  };
  stencil::Serial serial(nullptr, nullptr);
  uint8_t x = 'x';
  serial.QueueInput(&x, 1);
  state_seed(0, serial);
  stencil::I8042 i8042([] {});
  state_seed(1, i8042);
  stencil::AcpiPm pm([] {});
  state_seed(2, pm);
  FuzzMemory mem(kRam);
  stencil::VirtioMmio rng(std::make_unique<stencil::VirtioRng>(), mem, nullptr);
  state_seed(3, rng);
  stencil::VirtioNet::Mac mac = {2, 0, 0, 0, 0, 1};
  stencil::VirtioMmio nic(std::make_unique<stencil::VirtioNet>(stencil::UniqueFd(), mac), mem, nullptr);
  state_seed(4, nic);
  return seeds;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stencil::fuzz::WriteSeedsIfAsked(Seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  if (data[0] & 1) State(data[1], data + 2, size - 2);
  else Registers(data + 1, size - 1);
  return 0;
}
