#include "device_manager.h"

#include "../arch/x86/layout.h"
#include "../error.h"
#include "../virtio/mmio.h"

namespace stencil {

namespace {

void EncodeProperties(const DeviceProperties& props, ByteWriter& out) {
  out.U32(static_cast<uint32_t>(props.size()));
  for (const auto& [k, v] : props) out.String(k), out.String(v);
}

DeviceProperties DecodeProperties(ByteReader& in) {
  uint32_t n = in.Count(64, "device properties");
  DeviceProperties props;
  for (uint32_t i = 0; i < n; i++) {
    std::string k = in.String();
    props.emplace_back(std::move(k), in.String());
  }
  return props;
}

}  // namespace

std::string DeviceRecord::Describe() const {
  std::string s = kind + " at " + (mmio ? "mmio " : "port ") + HexString(base);
  if (irq) s += " irq " + std::to_string(irq);
  return s;
}

const IrqLine* DeviceManager::NewIrq(uint32_t gsi) {
  irqs_.push_back(std::make_unique<IrqLine>(vm_fd_, gsi));
  return irqs_.back().get();
}

void DeviceManager::AddPio(DeviceRecord record, std::shared_ptr<BusDevice> device) {
  record.mmio = false;
  pio_.Register(record.base, record.size, device);
  records_.push_back(std::move(record));
  devices_.push_back(std::move(device));
}

std::string DeviceManager::AddVirtio(const std::string& kind, DeviceProperties guest, DeviceProperties host,
                                     std::unique_ptr<VirtioDevice> device, const GuestMemoryAccess& mem) {
  if (!virtio_started_) {
    next_virtio_irq_ = x86::kFirstVirtioIrq;
    next_virtio_base_ = x86::kVirtioMmioBase;
    virtio_started_ = true;
  }
  if (next_virtio_irq_ > x86::kMaxIrq) throw VmmError(ErrorCode::kInvalidArgument, "too many virtio devices for the IOAPIC");
  DeviceRecord record{kind, true, next_virtio_base_, x86::kVirtioMmioSize, next_virtio_irq_, std::move(guest), std::move(host)};
  auto transport = std::make_shared<VirtioMmio>(std::move(device), mem, NewIrq(record.irq));
  mmio_.Register(record.base, record.size, transport);
  virtio_.push_back(transport.get());
  devices_.push_back(std::move(transport));
  records_.push_back(record);
  next_virtio_base_ += x86::kVirtioMmioSize;
  next_virtio_irq_++;
  return VirtioMmio::CmdlineEntry(record.base, record.irq);
}

void DeviceManager::QuiesceVirtio() {
  for (VirtioMmio* v : virtio_) v->Quiesce();
}

void DeviceManager::UnquiesceVirtio() {
  for (VirtioMmio* v : virtio_) v->Unquiesce();
}

void DeviceManager::EncodeLayout(const std::vector<DeviceRecord>& layout, ByteWriter& out) {
  out.U32(static_cast<uint32_t>(layout.size()));
  for (const auto& r : layout) {
    out.String(r.kind);
    out.Bool(r.mmio);
    out.U64(r.base);
    out.U64(r.size);
    out.U32(r.irq);
    EncodeProperties(r.guest, out);
    EncodeProperties(r.host, out);
  }
}

std::vector<DeviceRecord> DeviceManager::DecodeLayout(ByteReader& in) {
  std::vector<DeviceRecord> layout(in.Count(256, "devices"));
  for (auto& r : layout) {
    r.kind = in.String();
    r.mmio = in.Bool();
    r.base = in.U64();
    r.size = in.U64();
    r.irq = in.U32();
    r.guest = DecodeProperties(in);
    r.host = DecodeProperties(in);
  }
  return layout;
}

void DeviceManager::CheckLayout(const std::vector<DeviceRecord>& saved) const {
  auto fail = [](const std::string& why) { throw VmmError(ErrorCode::kSnapshot, "device layout differs from the snapshot: " + why); };
  for (size_t i = 0; i < std::max(saved.size(), records_.size()); i++) {
    if (i >= records_.size()) fail("the snapshot has " + saved[i].Describe() + ", this VM does not");
    if (i >= saved.size()) fail("this VM has " + records_[i].Describe() + ", the snapshot does not");
    const DeviceRecord& s = saved[i];
    const DeviceRecord& r = records_[i];
    if (s.kind != r.kind || s.mmio != r.mmio || s.base != r.base || s.size != r.size || s.irq != r.irq)
      fail("device " + std::to_string(i) + " is " + r.Describe() + " here, " + s.Describe() + " in the snapshot");
    if (s.guest != r.guest) {
      for (const auto& [key, value] : s.guest) {
        std::string mine = "(none)";
        for (const auto& [k, v] : r.guest)
          if (k == key) mine = v;
        if (mine != value) fail(r.Describe() + ": " + key + " is '" + mine + "' here, '" + value + "' in the snapshot");
      }
      fail(r.Describe() + ": guest-visible properties differ");
    }
  }
}

}  // namespace stencil
