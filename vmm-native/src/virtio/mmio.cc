#include "mmio.h"

#include <cstring>

namespace stencil {

namespace {
// Register offsets (virtio 1.x, 4.2.2).
enum : uint64_t {
  kMagic = 0x000, kVersion = 0x004, kDeviceId = 0x008, kVendorId = 0x00c,
  kDeviceFeatures = 0x010, kDeviceFeaturesSel = 0x014, kDriverFeatures = 0x020, kDriverFeaturesSel = 0x024,
  kQueueSel = 0x030, kQueueNumMax = 0x034, kQueueNum = 0x038, kQueueReady = 0x044, kQueueNotify = 0x050,
  kInterruptStatus = 0x060, kInterruptAck = 0x064, kStatus = 0x070,
  kQueueDescLow = 0x080, kQueueDescHigh = 0x084, kQueueDriverLow = 0x090, kQueueDriverHigh = 0x094,
  kQueueDeviceLow = 0x0a0, kQueueDeviceHigh = 0x0a4, kConfigGeneration = 0x0fc, kConfig = 0x100,
};
constexpr uint32_t kMagicValue = 0x74726976;  // "virt"
constexpr uint32_t kVendor = 0x53544e43;      // "STNC"
constexpr uint32_t kStatusFeaturesOk = 8, kStatusDriverOk = 4, kStatusNeedsReset = 64, kStatusFailed = 128;

void SetLow(uint64_t& v, uint32_t low) { v = (v & 0xffffffff00000000ULL) | low; }
void SetHigh(uint64_t& v, uint32_t high) { v = (v & 0xffffffffULL) | (uint64_t(high) << 32); }
}  // namespace

VirtioMmio::VirtioMmio(std::unique_ptr<VirtioDevice> device, const GuestMemoryAccess& mem, const IrqLine* irq)
    : device_(std::move(device)), mem_(mem), irq_(irq) {
  for (uint16_t max : device_->queue_max_sizes()) queues_.emplace_back(max);
}

VirtioMmio::~VirtioMmio() {
  // Members die in reverse order of declaration, queues_ before device_: a device thread still
  // running (vsock's loop, the 9p and blk workers) would read freed queues.
  device_.reset();
}

std::string VirtioMmio::CmdlineEntry(uint64_t base, uint32_t irq) {
  char buf[64];
  snprintf(buf, sizeof buf, "virtio_mmio.device=4K@0x%llx:%u", static_cast<unsigned long long>(base), irq);
  return buf;
}

Virtqueue* VirtioMmio::SelectedQueue() { return queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr; }

void VirtioMmio::Read(uint64_t offset, uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  if (offset >= kConfig) {
    device_->ReadConfig(offset - kConfig, data, len);
    return;
  }
  if (len != 4 || offset % 4) {  // registers are 32-bit only
    std::memset(data, 0xff, len);
    return;
  }
  uint32_t v = ReadRegister(offset);
  std::memcpy(data, &v, 4);
}

void VirtioMmio::Write(uint64_t offset, const uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  if (offset >= kConfig) {
    device_->WriteConfig(offset - kConfig, data, len);
    config_generation_++;
    return;
  }
  if (len != 4 || offset % 4) return;
  uint32_t v;
  std::memcpy(&v, data, 4);
  WriteRegister(offset, v);
}

uint32_t VirtioMmio::ReadRegister(uint64_t offset) {
  Virtqueue* q = SelectedQueue();
  switch (offset) {
    case kMagic: return kMagicValue;
    case kVersion: return 2;
    case kDeviceId: return device_->device_type();
    case kVendorId: return kVendor;
    case kDeviceFeatures: {
      uint64_t f = device_->features() | kVirtioFVersion1;
      return device_features_sel_ == 0 ? uint32_t(f) : device_features_sel_ == 1 ? uint32_t(f >> 32) : 0;
    }
    case kQueueNumMax: return q ? q->max_size() : 0;
    case kQueueReady: return q && q->ready() ? 1 : 0;
    case kInterruptStatus: return interrupt_status_;
    case kStatus: return status_;
    case kConfigGeneration: return config_generation_;
    default: return 0;
  }
}

void VirtioMmio::WriteRegister(uint64_t offset, uint32_t value) {
  Virtqueue* q = SelectedQueue();
  // Queue layout may only change before DRIVER_OK, and only for a queue that is not ready.
  bool queue_writable = q && !q->ready() && !(status_ & kStatusDriverOk);
  switch (offset) {
    case kDeviceFeaturesSel: device_features_sel_ = value; break;
    case kDriverFeaturesSel: driver_features_sel_ = value; break;
    case kDriverFeatures:
      if (status_ & kStatusFeaturesOk) break;
      if (driver_features_sel_ == 0) SetLow(driver_features_, value);
      else if (driver_features_sel_ == 1) SetHigh(driver_features_, value);
      break;
    case kQueueSel: queue_sel_ = value; break;
    case kQueueNum: if (queue_writable) q->set_size(static_cast<uint16_t>(value)); break;
    case kQueueReady:
      if (!q) break;
      if (value == 1 && queue_writable) {
        std::string why;
        if (!q->Validate(mem_, &why)) {
          SignalNeedsReset();
          break;
        }
        q->set_ready(true);
      } else if (value == 0) {
        q->set_ready(false);
      }
      break;
    case kQueueNotify:
      if (activated_ && value < queues_.size()) device_->QueueNotify(value);
      break;
    case kInterruptAck: interrupt_status_.fetch_and(~value); break;
    case kStatus: SetStatus(value); break;
    case kQueueDescLow: if (queue_writable) SetLow(q->desc_addr, value); break;
    case kQueueDescHigh: if (queue_writable) SetHigh(q->desc_addr, value); break;
    case kQueueDriverLow: if (queue_writable) SetLow(q->avail_addr, value); break;
    case kQueueDriverHigh: if (queue_writable) SetHigh(q->avail_addr, value); break;
    case kQueueDeviceLow: if (queue_writable) SetLow(q->used_addr, value); break;
    case kQueueDeviceHigh: if (queue_writable) SetHigh(q->used_addr, value); break;
    default: break;
  }
}

void VirtioMmio::SetStatus(uint32_t status) {
  if (status == 0) {
    ResetLocked();
    return;
  }
  if ((status & kStatusFeaturesOk) && !(status_ & kStatusFeaturesOk)) {
    // Accept only features we offered, and insist on virtio 1.x.
    uint64_t offered = device_->features() | kVirtioFVersion1;
    if ((driver_features_ & ~offered) || !(driver_features_ & kVirtioFVersion1)) status &= ~kStatusFeaturesOk;
  }
  // NEEDS_RESET is the device's to set and stays until the driver resets the device: a driver
  // that writes the status afterwards (DRIVER_OK after a queue it could not make ready) must not
  // clear it.
  status_ = status | (status_ & kStatusNeedsReset);
  if ((status & kStatusDriverOk) && !activated_ && !(status & kStatusFailed)) {
    for (auto& q : queues_)
      if (!q.ready()) return;  // all queues must be set up first (a driver may leave some unused)
    activated_ = true;
    device_->Activate(mem_, queues_, *this);
  }
}

void VirtioMmio::ResetLocked() {
  if (activated_) device_->Reset();
  activated_ = false;
  for (auto& q : queues_) q.Reset();
  status_ = 0;
  driver_features_ = 0;
  interrupt_status_ = 0;
  queue_sel_ = device_features_sel_ = driver_features_sel_ = 0;
}

void VirtioMmio::SignalUsedBuffer() {
  interrupt_status_.fetch_or(1);
  if (irq_) irq_->Trigger();
}

void VirtioMmio::SignalConfigChange() {
  interrupt_status_.fetch_or(2);
  config_generation_++;
  if (irq_) irq_->Trigger();
}

void VirtioMmio::SignalNeedsReset() {
  status_.fetch_or(kStatusNeedsReset);
  SignalConfigChange();
}

}  // namespace stencil
