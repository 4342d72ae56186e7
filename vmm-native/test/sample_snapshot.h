// A small but complete Snapshot (two vCPUs, a serial port and a 9p device with state), for the
// snapshot tests and the fuzz targets' seeds.
#pragma once
#include <linux/kvm.h>

#include <string>

#include "../src/snapshot/snapshot.h"

namespace stencil::testing {

inline Snapshot SampleSnapshot() {
  Snapshot s;
  s.config.vm.vcpus = 2;
  s.config.vm.memory.size = 256ULL << 20;
  s.config.vm.kernel_path = "/k/vmlinux";
  s.config.vm.initrd_path = "/k/initrd";
  s.config.vm.cmdline = "console=ttyS0";
  s.config.vm.shares.push_back({"share0", "/srv/pod", true});
  s.config.vm.vsock = {42, "/run/pod/vsock"};
  s.config.vm.net = {true, {0x02, 0, 0, 0xaa, 0xbb, 0xcc}, 7};
  s.config.cmdline = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5";
  s.config.kernel_sha256 = std::string(64, 'a');
  s.layout.push_back({"serial", false, 0x3f8, 8, 4, {}, {}});
  s.layout.push_back({"virtio-9p", true, 0xd0000000, 0x1000, 5, {{"tag", "share0"}}, {{"hostPath", "/srv/pod"}}});
  s.vm.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  s.vm.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  s.vm.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  s.vm.clock.clock = 123456789;
  for (uint32_t i = 0; i < 2; i++) {
    x86::VcpuState v;
    v.regs.rip = 0x1000 + i;
    v.sregs.cr3 = 0x9000;
    v.msrs.push_back({0x10, 0, 99});
    v.cpuid.push_back(kvm_cpuid_entry2{});
    v.tsc_khz = 2000000;
    s.vcpus.push_back(v);
  }
  s.devices = {{1, 2, 3}, {}};
  return s;
}

}  // namespace stencil::testing
