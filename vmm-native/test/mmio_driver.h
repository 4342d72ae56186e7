// The driver side of a virtio-mmio transport, driven from the test through its registers.
#pragma once
#include <cstdint>

#include "../src/virtio/mmio.h"
#include "fake_memory.h"

namespace stencil::testing {

inline void Reg(VirtioMmio& m, uint64_t off, uint32_t v) { m.Write(off, reinterpret_cast<uint8_t*>(&v), 4); }
inline uint32_t Reg(VirtioMmio& m, uint64_t off) {
  uint32_t v;
  m.Read(off, reinterpret_cast<uint8_t*>(&v), 4);
  return v;
}

// Negotiates VIRTIO_F_VERSION_1 and sets queue 0 up at FakeDriverQueue's offsets, as a driver
// does before DRIVER_OK; the device is active afterwards.
inline void ActivateQueue0(VirtioMmio& m, uint16_t size) {
  Reg(m, 0x70, 1 | 2);  // ACKNOWLEDGE | DRIVER
  Reg(m, 0x24, 1);
  Reg(m, 0x20, 1);  // VIRTIO_F_VERSION_1 (bit 32)
  Reg(m, 0x70, 1 | 2 | 8);  // | FEATURES_OK
  Reg(m, 0x30, 0);
  Reg(m, 0x38, size);
  Reg(m, 0x80, FakeDriverQueue::kDesc);
  Reg(m, 0x90, FakeDriverQueue::kAvail);
  Reg(m, 0xa0, FakeDriverQueue::kUsed);
  Reg(m, 0x44, 1);
  Reg(m, 0x70, 1 | 2 | 8 | 4);  // | DRIVER_OK
}

}  // namespace stencil::testing
