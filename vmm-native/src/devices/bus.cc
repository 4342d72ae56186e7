#include "bus.h"

#include "../kvm_headers.h"
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../error.h"

namespace stencil {

void Bus::Register(uint64_t base, uint64_t size, std::shared_ptr<BusDevice> device) {
  for (const auto& r : ranges_)
    if (base < r.base + r.size && r.base < base + size)
      throw VmmError(ErrorCode::kInvalidArgument,
                     std::string("bus range for ") + device->name() + " overlaps " + r.device->name());
  ranges_.push_back({base, size, std::move(device)});
}

const Bus::Range* Bus::Find(uint64_t addr, uint32_t len) const {
  for (const auto& r : ranges_)
    if (addr >= r.base && addr - r.base < r.size && len <= r.size - (addr - r.base)) return &r;
  return nullptr;
}

bool Bus::Read(uint64_t addr, uint8_t* data, uint32_t len) const {
  const Range* r = Find(addr, len);
  if (!r) return false;
  r->device->Read(addr - r->base, data, len);
  return true;
}

bool Bus::Write(uint64_t addr, const uint8_t* data, uint32_t len) const {
  const Range* r = Find(addr, len);
  if (!r) return false;
  r->device->Write(addr - r->base, data, len);
  return true;
}

IrqLine::IrqLine(int vm_fd, uint32_t gsi) : vm_fd_(vm_fd), gsi_(gsi) {
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) throw VmmError(ErrorCode::kKvm, WithErrno("eventfd for IRQ " + std::to_string(gsi)));
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event_fd_);
  irqfd.gsi = gsi;
  if (ioctl(vm_fd_, KVM_IRQFD, &irqfd) < 0) {
    int err = errno;
    close(event_fd_);
    throw VmmError(ErrorCode::kKvm, WithErrno("KVM_IRQFD for IRQ " + std::to_string(gsi), err));
  }
}

IrqLine::~IrqLine() {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event_fd_);
  irqfd.gsi = gsi_;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  ioctl(vm_fd_, KVM_IRQFD, &irqfd);
  close(event_fd_);
}

void IrqLine::Trigger() const {
  uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the interrupt is pending anyway.
  ssize_t n = write(event_fd_, &one, sizeof one);
  (void)n;
}

}  // namespace stencil
