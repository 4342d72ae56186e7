// A hostile guest on this machine's /dev/kvm: CPL0 code drives a virtio device through its
// registers the way a driver would, but with virtqueues the test lays out malformed in guest RAM
// (chains that loop, buffers outside RAM, lengths that overflow, indirect tables it never offered,
// an avail index that jumps, rings outside RAM), then floods the queue with notifications. Each
// device must mark itself NEEDS_RESET and go on: the guest reaches its CPL3 counting loop, and a
// second VM beside it counts on throughout. Runs with the threads confined when
// STENCIL_TEST_SECCOMP=1 (make -C vmm-native test runs both). Skipped without /dev/kvm.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../src/arch/x86/layout.h"
#include "../src/vm.h"
#include "counter_guest.h"

using namespace stencil;
using namespace std::chrono_literals;

namespace {

namespace tg = stencil::testing;

// virtio-mmio (version 2) registers.
constexpr uint64_t kMmio = x86::kVirtioMmioBase;
constexpr uint64_t kDriverFeatures = 0x020, kDriverFeaturesSel = 0x024, kQueueSel = 0x030, kQueueNum = 0x038,
                   kQueueReady = 0x044, kQueueNotify = 0x050, kStatus = 0x070, kQueueDescLow = 0x080,
                   kQueueDescHigh = 0x084, kQueueDriverLow = 0x090, kQueueDriverHigh = 0x094,
                   kQueueDeviceLow = 0x0a0, kQueueDeviceHigh = 0x0a4;
constexpr uint32_t kAcknowledge = 1, kDriver = 2, kDriverOk = 4, kFeaturesOk = 8, kNeedsReset = 64;
constexpr uint16_t kNext = 1, kWrite = 2, kIndirect = 4;

constexpr uint16_t kQueueSize = 8;
constexpr uint64_t kQueueArea = 0x280000;  // queue q: descriptors at +q*0x4000, avail +0x1000, used +0x2000
constexpr uint64_t kStatusSlot = 0x300000;  // where the guest stores the status it read back
constexpr uint64_t kRamSize = 64ULL << 20;

uint64_t DescAddr(uint32_t q) { return kQueueArea + q * 0x4000; }
uint64_t AvailAddr(uint32_t q) { return DescAddr(q) + 0x1000; }
uint64_t UsedAddr(uint32_t q) { return DescAddr(q) + 0x2000; }

// x86-64 machine code for the CPL0 preamble (counter_guest.h runs it before its prologue).
class GuestCode {
 public:
  void Write32(uint64_t addr, uint32_t value) {
    Bytes({0x48, 0xbb}), Imm64(addr);  // mov rbx, addr
    Bytes({0xc7, 0x03}), Imm32(value);  // mov dword [rbx], value
  }
  // Reads the register at `addr` until a bit of `mask` is set or `tries` reads, then stores the
  // last value at `slot`.
  void PollAndStore(uint64_t addr, uint32_t mask, uint32_t tries, uint32_t slot) {
    Bytes({0x48, 0xbb}), Imm64(addr);  // mov rbx, addr
    Bytes({0xb9}), Imm32(tries);       // mov ecx, tries
    size_t loop = code_.size();
    Bytes({0x8b, 0x03});               // 1: mov eax, [rbx]
    Bytes({0xa9}), Imm32(mask);        // test eax, mask
    Bytes({0x75, 0x04});               // jnz 2f
    Bytes({0xff, 0xc9});               // dec ecx
    Bytes({0x75, static_cast<uint8_t>(loop - (code_.size() + 2))});  // jnz 1b
    Bytes({0x89, 0x04, 0x25}), Imm32(slot);  // 2: mov [slot], eax
  }
  const std::vector<uint8_t>& code() const { return code_; }

 private:
  void Bytes(std::initializer_list<uint8_t> b) { code_.insert(code_.end(), b); }
  void Imm32(uint32_t v) {
    for (int i = 0; i < 4; i++) code_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void Imm64(uint64_t v) {
    for (int i = 0; i < 8; i++) code_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> code_;
};

struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next;
};

// What the guest publishes on the attacked queue (descriptors, avail.idx, and where it says the
// rings are), written into guest RAM before the VM starts.
struct Attack {
  const char* name;
  std::vector<Desc> descs;
  uint16_t avail_idx = 1;
  uint64_t desc_ring = 0;  // 0: the queue's own area
};

std::vector<Attack> Attacks() {
  const uint64_t buf = 0x290000;
  return {
      {"a chain that loops", {{buf, 64, kNext | kWrite, 1}, {buf + 64, 64, kNext | kWrite, 0}}},
      {"a buffer outside RAM", {{0x7ffffffff000, 4096, kWrite, 0}}},
      {"a length that runs past RAM's end", {{kRamSize - 16, 0xffffffff, kWrite, 0}}},
      {"an indirect table it never offered", {{buf, 32, kIndirect, 0}}},
      {"an avail index that jumps past the queue", {{buf, 64, kWrite, 0}}, 0xfff0},
      {"a next index past the queue", {{buf, 64, kNext | kWrite, 200}}},
      {"a descriptor table outside RAM", {{buf, 64, kWrite, 0}}, 1, 0x7fff00000000},
  };
}

struct DeviceUnderAttack {
  const char* name;
  uint32_t queues;
  uint32_t attacked_queue;
  std::function<void(VmConfig&, const std::string& dir)> configure;
};

std::vector<DeviceUnderAttack> Devices() {
  return {
      {"virtio-rng", 1, 0, [](VmConfig& c, const std::string&) { c.virtio_rng = true; }},
      {"virtio-blk", 1, 0,
       [](VmConfig& c, const std::string& dir) {
         std::string image = dir + "/disk.img";
         int fd = open(image.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
         EXPECT_EQ(ftruncate(fd, 1 << 20), 0);
         close(fd);
         c.disks.push_back({image, false, "hostile"});
       }},
      {"virtio-9p", 1, 0,
       [](VmConfig& c, const std::string& dir) {
         std::filesystem::create_directories(dir + "/share");
         c.shares.push_back({"share", dir + "/share", false});
       }},
      {"virtio-vsock (tx)", 3, 1, [](VmConfig& c, const std::string& dir) { c.vsock = {3, dir + "/vsock.sock"}; }},
      {"virtio-net (tx, no wire)", 2, 1, [](VmConfig& c, const std::string&) { c.net.enabled = true; }},
  };
}

// The driver's steps (reset, features, every queue, DRIVER_OK), a notify of the attacked queue,
// the status read back until NEEDS_RESET, then a flood of notifications.
std::vector<uint8_t> HostileDriver(const DeviceUnderAttack& d, const Attack& a) {
  GuestCode g;
  g.Write32(kMmio + kStatus, 0);
  g.Write32(kMmio + kStatus, kAcknowledge);
  g.Write32(kMmio + kStatus, kAcknowledge | kDriver);
  g.Write32(kMmio + kDriverFeaturesSel, 1);
  g.Write32(kMmio + kDriverFeatures, 1);  // VIRTIO_F_VERSION_1, nothing else
  g.Write32(kMmio + kDriverFeaturesSel, 0);
  g.Write32(kMmio + kDriverFeatures, 0);
  g.Write32(kMmio + kStatus, kAcknowledge | kDriver | kFeaturesOk);
  for (uint32_t q = 0; q < d.queues; q++) {
    uint64_t desc = q == d.attacked_queue && a.desc_ring ? a.desc_ring : DescAddr(q);
    g.Write32(kMmio + kQueueSel, q);
    g.Write32(kMmio + kQueueNum, kQueueSize);
    g.Write32(kMmio + kQueueDescLow, static_cast<uint32_t>(desc));
    g.Write32(kMmio + kQueueDescHigh, static_cast<uint32_t>(desc >> 32));
    g.Write32(kMmio + kQueueDriverLow, static_cast<uint32_t>(AvailAddr(q)));
    g.Write32(kMmio + kQueueDriverHigh, 0);
    g.Write32(kMmio + kQueueDeviceLow, static_cast<uint32_t>(UsedAddr(q)));
    g.Write32(kMmio + kQueueDeviceHigh, 0);
    g.Write32(kMmio + kQueueReady, 1);
  }
  g.Write32(kMmio + kStatus, kAcknowledge | kDriver | kFeaturesOk | kDriverOk);
  g.Write32(kMmio + kQueueNotify, d.attacked_queue);
  g.PollAndStore(kMmio + kStatus, kNeedsReset, 200000, static_cast<uint32_t>(kStatusSlot));
  for (int i = 0; i < 500; i++) g.Write32(kMmio + kQueueNotify, d.attacked_queue);
  return g.code();
}

void LayOut(Vm& vm, const DeviceUnderAttack& d, const Attack& a) {
  for (uint32_t q = 0; q < d.queues; q++) {
    std::memset(vm.memory().Translate(DescAddr(q), 0x3000), 0, 0x3000);
    if (q != d.attacked_queue) continue;
    std::memcpy(vm.memory().Translate(DescAddr(q), a.descs.size() * sizeof(Desc)), a.descs.data(), a.descs.size() * sizeof(Desc));
    uint16_t* avail = reinterpret_cast<uint16_t*>(vm.memory().Translate(AvailAddr(q), 8));
    avail[1] = a.avail_idx;  // flags, idx, ring[0] = 0
  }
  std::memset(vm.memory().Translate(kStatusSlot, 4), 0, 4);
}

uint64_t Counter(const Vm& vm) {
  return __atomic_load_n(reinterpret_cast<uint64_t*>(vm.memory().Translate(tg::kCounterAddr, 8)), __ATOMIC_SEQ_CST);
}

bool CountsPast(const Vm& vm, uint64_t value, std::chrono::milliseconds within = 20s) {
  auto until = std::chrono::steady_clock::now() + within;
  while (Counter(vm) <= value) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

class HostileGuest : public tg::CounterGuestTest {
 protected:
  HostileGuest() : CounterGuestTest("hostile-guest", false) {}
};

TEST_F(HostileGuest, EveryDeviceMarksItselfBrokenAndTheGuestAndItsNeighbourRunOn) {
  // The neighbour: an ordinary counting VM that must not notice any of it.
  std::unique_ptr<Vm> neighbour = std::make_unique<Vm>(CounterVmConfig("neighbour-ram"), VmCallbacks{});
  neighbour->Start();
  ASSERT_TRUE(CountsPast(*neighbour, 1000)) << "the neighbour never counted";

  int runs = 0;
  for (const DeviceUnderAttack& d : Devices()) {
    for (const Attack& a : Attacks()) {
      SCOPED_TRACE(std::string(d.name) + ", " + a.name);
      std::string kernel = dir_ + "/hostile.elf";
      tg::WriteCounterGuest(kernel, false, 0, HostileDriver(d, a));
      VmConfig c = CounterVmConfig("hostile-ram");
      c.kernel_path = kernel;
      c.virtio_rng = false;
      d.configure(c, dir_);
      ExitReason exit = ExitReason::kNone;
      std::string detail;
      VmCallbacks cb;
      cb.exited = [&](ExitReason r, const std::string& why) { exit = r, detail = why; };
      {
        Vm vm(c, cb);
        LayOut(vm, d, a);
        uint64_t neighbour_before = Counter(*neighbour);
        vm.Start();
        // The guest reached CPL3 only after its whole attack (notify, read back, flood).
        ASSERT_TRUE(CountsPast(vm, 1000)) << "the hostile guest stopped: " << detail;
        uint32_t status;
        std::memcpy(&status, vm.memory().Translate(kStatusSlot, 4), 4);
        EXPECT_TRUE(status & kNeedsReset) << "device status " << status << " after the attack";
        EXPECT_EQ(exit, ExitReason::kNone) << detail;
        EXPECT_TRUE(CountsPast(*neighbour, neighbour_before)) << "the neighbour stopped counting";
        vm.Stop();
      }
      std::filesystem::remove(dir_ + "/hostile-ram");
      runs++;
    }
  }
  EXPECT_EQ(runs, 35);
  EXPECT_TRUE(CountsPast(*neighbour, Counter(*neighbour)));
  neighbour->Stop();
}

}  // namespace
