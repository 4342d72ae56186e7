// Saved state of the virtio-mmio transport: the driver-visible registers, each queue's size,
// readiness, ring addresses and indexes, then the device's own state.
#include "mmio.h"

namespace stencil {

void VirtioMmio::SaveState(ByteWriter& out) {
  std::lock_guard<std::mutex> lock(mu_);
  out.U32(device_->device_type());
  out.U32(status_);
  out.U64(driver_features_);
  out.U32(device_features_sel_);
  out.U32(driver_features_sel_);
  out.U32(queue_sel_);
  out.U32(interrupt_status_);
  out.U32(config_generation_);
  out.Bool(activated_);
  out.U32(static_cast<uint32_t>(queues_.size()));
  for (const Virtqueue& q : queues_) {
    out.U16(q.size());
    out.Bool(q.ready());
    out.U64(q.desc_addr);
    out.U64(q.avail_addr);
    out.U64(q.used_addr);
    out.U16(q.next_avail());
    out.U16(q.next_used());
  }
  device_->SaveState(out);
}

void VirtioMmio::RestoreState(ByteReader& in) {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t type = in.U32();
  if (type != device_->device_type())
    in.Fail(std::string("saved virtio device type ") + std::to_string(type) + ", this slot holds " + device_->name());
  status_ = in.U32();
  driver_features_ = in.U64();
  device_features_sel_ = in.U32();
  driver_features_sel_ = in.U32();
  queue_sel_ = in.U32();
  interrupt_status_ = in.U32();
  config_generation_ = in.U32();
  bool activated = in.Bool();
  uint32_t count = in.U32();
  if (count != queues_.size())
    in.Fail(std::to_string(count) + " saved queues, " + device_->name() + " has " + std::to_string(queues_.size()));
  for (Virtqueue& q : queues_) {
    uint16_t size = in.U16();
    if (size > q.max_size()) in.Fail("queue size " + std::to_string(size) + " above the maximum " + std::to_string(q.max_size()));
    q.set_size(size);
    q.set_ready(in.Bool());
    q.desc_addr = in.U64();
    q.avail_addr = in.U64();
    q.used_addr = in.U64();
    uint16_t next_avail = in.U16();
    q.RestoreIndexes(next_avail, in.U16());
  }
  device_->RestoreState(in);
  if (activated) {
    for (Virtqueue& q : queues_) {
      std::string why;
      if (q.ready() && !q.Validate(mem_, &why)) in.Fail("saved queue does not fit guest memory: " + why);
    }
    activated_ = true;
    device_->Activate(mem_, queues_, *this);
  }
  // As for the serial port (serial_persist.cc): an edge in flight at save time is in no irqchip
  // state, so a pending interrupt is signalled again; the driver ignores one it already took.
  if (interrupt_status_ && irq_) irq_->Trigger();
}

}  // namespace stencil
