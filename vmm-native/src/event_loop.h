// A small epoll event loop for device worker threads: file-descriptor callbacks, one-shot timers
// and cross-thread wakeups (an eventfd). Devices whose guest-facing entry points (QueueNotify on a
// vCPU thread) must not block hand their work to a loop thread through Post() or their own
// eventfd, and do all socket I/O there.
//
// Threading: Add/Modify/Remove/AddTimer/CancelTimer are for the loop thread (or for setup before
// Start, or while the loop is stopped). Post, Stop and InLoopThread may be called from any thread.
// Callbacks run on the loop thread, one at a time; a callback may add or remove any registration,
// its own included (a removed registration is never called again, even later in the same batch).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "fd.h"

namespace stencil {

class EventLoop {
 public:
  using FdCallback = std::function<void(uint32_t events)>;  // EPOLLIN/EPOLLOUT/EPOLLHUP/EPOLLERR bits
  using Task = std::function<void()>;
  using Clock = std::chrono::steady_clock;
  using TimerId = uint64_t;

  EventLoop();  // throws VmmError if epoll or eventfd cannot be created
  ~EventLoop();  // stops and joins the thread; registered fds are not closed (their owners close them)
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs the loop on a new thread (named `name`, at most 15 characters) until Stop().
  void Start(const char* name);
  // Asks the loop to return and joins its thread. Tasks posted but not yet run wait for the next
  // Start (or are dropped with the loop). Idempotent; must not be called on the loop thread.
  void Stop();
  bool running() const { return thread_.joinable(); }
  bool InLoopThread() const { return std::this_thread::get_id() == loop_thread_id_.load(); }

  // Register `fd` for `events` (EPOLLIN, EPOLLOUT, ...). Level-triggered. EPOLLHUP and EPOLLERR
  // are always reported, so an owner that cannot act on them should Remove the fd.
  void Add(int fd, uint32_t events, FdCallback cb);
  void Modify(int fd, uint32_t events);
  void Remove(int fd);  // no-op for an fd that is not registered
  bool Registered(int fd) const { return fds_.count(fd) != 0; }

  TimerId AddTimer(Clock::duration delay, Task task);
  void CancelTimer(TimerId id);  // no-op for a timer that already fired or was cancelled

  // Run `task` on the loop thread soon (thread-safe, never blocks on the loop).
  void Post(Task task);
  // Wake the loop without a task (thread-safe, async-signal-safe: one write to an eventfd).
  void Wake();

  // One iteration: wait up to `timeout_ms` (-1: until something happens, capped by the next
  // timer), then dispatch fd events, due timers and posted tasks. For tests and for Start().
  void RunOnce(int timeout_ms);

 private:
  struct Registration {
    int fd;
    FdCallback cb;
  };
  void DrainWakeups();
  int TimeoutFor(int requested_ms) const;
  void RunTimers();
  void RunTasks();

  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd
  std::thread thread_;
  std::atomic<std::thread::id> loop_thread_id_{};
  std::atomic<bool> stop_{false};

  // Loop-thread state. Each registration has a unique token (epoll_data.u64), so an event for a
  // registration removed earlier in the same batch is recognised and skipped.
  uint64_t next_token_ = 1;
  std::unordered_map<int, uint64_t> fds_;  // fd -> token
  std::unordered_map<uint64_t, std::shared_ptr<Registration>> registrations_;
  TimerId next_timer_ = 1;
  std::multimap<Clock::time_point, std::pair<TimerId, Task>> timers_;
  std::unordered_map<TimerId, Clock::time_point> timer_deadlines_;

  std::mutex tasks_mu_;
  std::vector<Task> tasks_;
};

}  // namespace stencil
