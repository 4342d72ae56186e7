// Queue notifications handed from vCPU threads (QueueNotify, under the transport's lock, must not
// block) to a device's event-loop thread: a bit per queue and an eventfd the loop watches.
#pragma once
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "../error.h"
#include "../fd.h"

namespace stencil {

class QueueKicks {
 public:
  QueueKicks() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (!fd_.valid()) throw VmmError(ErrorCode::kState, WithErrno("eventfd"));
  }
  int fd() const { return fd_.get(); }
  // Any thread: mark the queues in `mask` and wake the loop.
  void Kick(uint32_t mask) {
    bits_.fetch_or(mask);
    uint64_t one = 1;
    // EAGAIN (counter saturated) still leaves the eventfd readable: the wakeup is not lost.
    [[maybe_unused]] ssize_t n = write(fd_.get(), &one, sizeof one);
  }
  // Loop thread: the queues kicked since the last call.
  uint32_t Take() {
    uint64_t v;
    while (read(fd_.get(), &v, sizeof v) > 0) {
    }
    return bits_.exchange(0);
  }
  void Clear() { bits_ = 0; }

 private:
  UniqueFd fd_;
  std::atomic<uint32_t> bits_{0};
};

}  // namespace stencil
