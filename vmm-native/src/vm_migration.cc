// What a live migration needs from a running VM: a dirty log (the guest's writes through KVM's
// per-slot log, the devices' through GuestMemory's marks), a pause it can wait for, and a
// throttle that slows the guest down when it dirties RAM faster than the link carries it.
#include <pthread.h>

#include <algorithm>
#include <signal.h>
#include <sys/ioctl.h>

#include "error.h"
#include "kvm.h"
#include "snapshot/snapshot.h"
#include "vm.h"
#include "vmm_thread.h"

namespace stencil {

namespace {

constexpr auto kThrottlePeriod = std::chrono::microseconds(10000);

}  // namespace

VmDescription Vm::Describe() {
  std::lock_guard<std::mutex> lock(mu_);
  return VmDescription{CaptureConfig(), devices_->layout()};
}

void Vm::StartDirtyLog() {
  std::lock_guard<std::mutex> lock(mu_);
  if (dirty_log_) throw VmmError(ErrorCode::kState, "dirty logging is already on (another migration is running)");
  memory_->StartDirtyTracking();
  uint32_t slot = 0;
  for (const auto& r : memory_->regions()) {
    kvm_userspace_memory_region region{slot, KVM_MEM_LOG_DIRTY_PAGES, r.guest_addr, r.size, reinterpret_cast<uint64_t>(r.host_addr)};
    if (ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
      int err = errno;
      for (uint32_t undo = 0; undo < slot; undo++) {
        const auto& u = memory_->regions()[undo];
        kvm_userspace_memory_region plain{undo, 0, u.guest_addr, u.size, reinterpret_cast<uint64_t>(u.host_addr)};
        ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &plain);
      }
      memory_->StopDirtyTracking();
      throw VmmError(ErrorCode::kKvm, WithErrno("turning on KVM's dirty log for memory slot " + std::to_string(slot), err));
    }
    slot++;
  }
  dirty_log_ = true;
}

void Vm::StopDirtyLog() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!dirty_log_) return;
  memory_->StopDirtyTracking();
  uint32_t slot = 0;
  for (const auto& r : memory_->regions()) {
    kvm_userspace_memory_region region{slot++, 0, r.guest_addr, r.size, reinterpret_cast<uint64_t>(r.host_addr)};
    ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region);  // best effort: the log only costs speed
  }
  dirty_log_ = false;
}

void Vm::CollectDirtyPages(std::vector<uint64_t>& bitmap) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!dirty_log_) throw VmmError(ErrorCode::kState, "dirty logging is off");
  const size_t words = DirtyBitmapWords(memory_->size());
  if (bitmap.size() < words) bitmap.resize(words, 0);
  std::vector<uint64_t> slot_bits;
  uint32_t slot = 0;
  for (const auto& r : memory_->regions()) {
    const uint64_t pages = r.size / kGuestPageSize;
    slot_bits.assign(static_cast<size_t>((pages + 63) / 64), 0);
    kvm_dirty_log log{};
    log.slot = slot;
    log.dirty_bitmap = slot_bits.data();
    if (ioctl(vm_.get(), KVM_GET_DIRTY_LOG, &log) < 0)
      throw VmmError(ErrorCode::kKvm, WithErrno("reading KVM's dirty log of memory slot " + std::to_string(slot)));
    // A slot's page i is the RAM file's page first + i.
    const uint64_t first = r.file_offset / kGuestPageSize;
    for (size_t w = 0; w < slot_bits.size(); w++) {
      for (uint64_t bits = slot_bits[w]; bits; bits &= bits - 1) {
        uint64_t page = first + w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits));
        bitmap[page / 64] |= 1ULL << (page % 64);
      }
    }
    slot++;
  }
  memory_->CollectDirty(bitmap);
}

bool Vm::PauseAndWait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!started_ || finished_) return false;
  if (!paused_ && !pause_requested_) {
    pause_requested_ = true;
    KickAll();
  }
  return paused_cv_.wait_for(lock, timeout, [&] { return paused_ || finished_; }) && paused_;
}

bool Vm::paused() {
  std::lock_guard<std::mutex> lock(mu_);
  return paused_;
}

void Vm::SetThrottle(uint32_t percent) {
  if (percent > 99) percent = 99;
  uint32_t before = throttle_percent_.exchange(percent);
  if (before == 0 && percent > 0) {
    if (throttle_thread_.joinable()) throttle_thread_.join();
    throttle_thread_ = StartVmmThread("vcpu-throttle", ThreadRole::kThrottle, [this] { ThrottleLoop(); });
  } else if (percent == 0 && throttle_thread_.joinable()) {
    throttle_thread_.join();
  }
}

void Vm::ThrottleLoop() {
  // A vCPU that never exits (a guest spinning in user mode) only sleeps when kicked: kick every
  // vCPU once a period; each then sleeps its share of the period before entering the guest again.
  while (uint32_t percent = throttle_percent_.load()) {
    // (Never a busy loop: it would starve the vCPUs of the lock they park with.)
    std::this_thread::sleep_for(std::max(kThrottlePeriod * (100 - percent) / 100, std::chrono::microseconds(100)));
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || !started_) continue;
    for (auto& v : vcpus_)
      if (v->thread.joinable()) pthread_kill(v->thread.native_handle(), KickSignal());
  }
}

void Vm::ThrottleSleep() {
  uint32_t percent = throttle_percent_.load(std::memory_order_relaxed);
  if (percent && !stop_ && !pause_requested_) std::this_thread::sleep_for(kThrottlePeriod * percent / 100);
}

}  // namespace stencil
