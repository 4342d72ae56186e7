// Rate limit for log lines a guest can trigger at will (malformed packets, dropped frames): a
// guest must not be able to flood the host log. Thread-safe.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace stencil {

class LogLimiter {
 public:
  using Sink = std::function<void(const std::string&)>;
  explicit LogLimiter(uint32_t per_second) : per_second_(per_second) {}

  // Passes "<prefix><msg>" to `sink` unless `per_second` lines already went out this second;
  // the next window starts with a count of what was suppressed.
  void Log(const Sink& sink, const std::string& prefix, const std::string& msg) {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (now - window_ >= std::chrono::seconds(1)) {
      if (suppressed_) sink(prefix + std::to_string(suppressed_) + " more messages suppressed");
      window_ = now;
      count_ = suppressed_ = 0;
    }
    if (count_++ < per_second_) sink(prefix + msg);
    else suppressed_++;
  }

 private:
  const uint32_t per_second_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_{};
  uint32_t count_ = 0, suppressed_ = 0;
};

}  // namespace stencil
