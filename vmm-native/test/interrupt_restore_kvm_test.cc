// A device restored with an interrupt pending signals it again. Its line is edge-triggered
// through an irqfd that KVM delivers from a worker, so an edge still in flight when the VM was
// saved is in no saved irqchip state; without a new edge the guest's driver waits forever (a
// clone's console that never prints again). Checked on this machine's /dev/kvm: the restored
// device's edge must reach the in-kernel interrupt controller. GSIs below 16 also go to the PIC,
// which latches an edge in its IRR until a CPU takes it (no vCPU runs here), where the IOAPIC
// clears its IRR again when the irqfd lowers the line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>

#include <chrono>
#include <thread>

#include "../src/devices/bus.h"
#include "../src/devices/serial.h"
#include "../src/fd.h"
#include "../src/kvm.h"
#include "../src/kvm_headers.h"
#include "../src/virtio/rng.h"
#include "fake_memory.h"
#include "mmio_driver.h"

using namespace stencil;
using namespace std::chrono_literals;
namespace tg = stencil::testing;

namespace {

constexpr uint32_t kGsi = 5;

class IrqchipVm : public ::testing::Test {
 protected:
  void SetUp() override {
    kvm_ = UniqueFd(open("/dev/kvm", O_RDWR | O_CLOEXEC));
    if (!kvm_.valid()) GTEST_SKIP() << "no /dev/kvm here";
    vm_ = UniqueFd(CreateVmFd(kvm_.get()));
    ASSERT_TRUE(vm_.valid());
    ASSERT_EQ(ioctl(vm_.get(), KVM_CREATE_IRQCHIP, 0), 0);
  }

  uint8_t PicIrr() const {
    kvm_irqchip chip{};
    chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
    EXPECT_EQ(ioctl(vm_.get(), KVM_GET_IRQCHIP, &chip), 0);
    return chip.chip.pic.irr;
  }

  // Whether an edge on kGsi reaches the PIC within a second (the irqfd worker is asynchronous).
  bool EdgeArrives() const {
    for (int i = 0; i < 100; i++) {
      if (PicIrr() & (1u << kGsi)) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  UniqueFd kvm_, vm_;
};

// Restores, on `irq`, a serial port saved with its THRE interrupt latched and enabled or not.
void RestoreSerial(Serial& restored, bool thr_empty_pending) {
  Serial saved(nullptr, nullptr);
  uint8_t ier = thr_empty_pending ? 0x02 : 0x00;  // enabling THRE latches its interrupt
  saved.Write(1, &ier, 1);
  ByteWriter w;
  saved.SaveState(w);
  ByteReader r(w.data(), "serial");
  restored.RestoreState(r);
}

}  // namespace

TEST_F(IrqchipVm, SerialRestoredWithoutPendingInterruptStaysQuiet) {
  IrqLine irq(vm_.get(), kGsi);
  Serial restored(&irq, nullptr);
  RestoreSerial(restored, false);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(PicIrr() & (1u << kGsi), 0u);
}

TEST_F(IrqchipVm, SerialRestoredWithPendingThreInterruptSignalsIt) {
  IrqLine irq(vm_.get(), kGsi);
  Serial restored(&irq, nullptr);
  RestoreSerial(restored, true);
  EXPECT_TRUE(EdgeArrives());
}

TEST_F(IrqchipVm, VirtioMmioRestoredWithUsedBufferInterruptSignalsIt) {
  tg::FakeMemory mem(0x10000);
  VirtioMmio saved(std::make_unique<VirtioRng>(), mem, nullptr);
  tg::ActivateQueue0(saved, 16);
  Virtqueue driver_view(16);
  tg::FakeDriverQueue driver(mem, driver_view, 16);
  driver.Desc(0, 0x8000, 32, 2 /* WRITE */, 0);
  driver.Publish(0);
  tg::Reg(saved, 0x50, 0);  // QueueNotify: the device fills the buffer and raises "used buffer"
  ASSERT_EQ(driver.used_idx(), 1);
  ASSERT_EQ(tg::Reg(saved, 0x60), 1u);  // InterruptStatus, not yet acknowledged
  ByteWriter w;
  saved.SaveState(w);

  IrqLine irq(vm_.get(), kGsi);
  VirtioMmio restored(std::make_unique<VirtioRng>(), mem, &irq);
  ByteReader r(w.data(), "virtio-rng");
  restored.RestoreState(r);
  EXPECT_TRUE(EdgeArrives());
}
