#include "event_loop.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstdio>

#include "error.h"
#include "vmm_thread.h"

namespace stencil {

namespace {
constexpr uint64_t kWakeToken = 0;  // registration tokens start at 1
constexpr int kMaxEvents = 64;
}  // namespace

EventLoop::EventLoop() {
  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) throw VmmError(ErrorCode::kState, WithErrno("epoll_create1"));
  wake_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_.valid()) throw VmmError(ErrorCode::kState, WithErrno("eventfd"));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) < 0)
    throw VmmError(ErrorCode::kState, WithErrno("epoll_ctl(eventfd)"));
}

EventLoop::~EventLoop() { Stop(); }

void EventLoop::Start(const char* name) {
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = StartVmmThread(name, ThreadRole::kDevice, [this] {
    loop_thread_id_ = std::this_thread::get_id();
    while (!stop_) {
      try {
        RunOnce(-1);
      } catch (const std::exception& e) {
        // A device callback failed: report it and keep serving the other registrations.
        std::fprintf(stderr, "stencil-vmm: event loop: %s\n", e.what());
      }
    }
    loop_thread_id_ = std::thread::id();
  });
}

void EventLoop::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  Wake();
  thread_.join();
}

void EventLoop::Add(int fd, uint32_t events, FdCallback cb) {
  if (fds_.count(fd)) throw VmmError(ErrorCode::kState, "fd " + std::to_string(fd) + " is already in the event loop");
  uint64_t token = next_token_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0)
    throw VmmError(ErrorCode::kState, WithErrno("epoll_ctl(ADD, fd " + std::to_string(fd) + ")"));
  fds_[fd] = token;
  registrations_[token] = std::make_shared<Registration>(Registration{fd, std::move(cb)});
}

void EventLoop::Modify(int fd, uint32_t events) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = it->second;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) < 0)
    throw VmmError(ErrorCode::kState, WithErrno("epoll_ctl(MOD, fd " + std::to_string(fd) + ")"));
}

void EventLoop::Remove(int fd) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return;
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);  // fails harmlessly if the fd was closed
  registrations_.erase(it->second);
  fds_.erase(it);
}

EventLoop::TimerId EventLoop::AddTimer(Clock::duration delay, Task task) {
  TimerId id = next_timer_++;
  Clock::time_point when = Clock::now() + delay;
  timers_.emplace(when, std::make_pair(id, std::move(task)));
  timer_deadlines_[id] = when;
  return id;
}

void EventLoop::CancelTimer(TimerId id) {
  auto d = timer_deadlines_.find(id);
  if (d == timer_deadlines_.end()) return;
  auto range = timers_.equal_range(d->second);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second.first == id) {
      timers_.erase(it);
      break;
    }
  }
  timer_deadlines_.erase(d);
}

void EventLoop::Post(Task task) {
  {
    std::lock_guard<std::mutex> lock(tasks_mu_);
    tasks_.push_back(std::move(task));
  }
  Wake();
}

void EventLoop::Wake() {
  uint64_t one = 1;
  // EAGAIN (counter saturated) still leaves the eventfd readable: the wakeup is not lost.
  [[maybe_unused]] ssize_t n = write(wake_.get(), &one, sizeof one);
}

void EventLoop::DrainWakeups() {
  uint64_t v;
  while (read(wake_.get(), &v, sizeof v) > 0) {
  }
}

int EventLoop::TimeoutFor(int requested_ms) const {
  if (timers_.empty()) return requested_ms;
  auto until = timers_.begin()->first - Clock::now();
  // Round up so a timer is never polled for just before its deadline (a busy spin).
  int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(until + std::chrono::microseconds(999)).count();
  if (ms < 0) ms = 0;
  if (ms > 60'000) ms = 60'000;
  return requested_ms < 0 ? static_cast<int>(ms) : std::min(requested_ms, static_cast<int>(ms));
}

void EventLoop::RunTimers() {
  Clock::time_point now = Clock::now();
  // Collect first: a timer's task may add or cancel timers.
  std::vector<Task> due;
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto it = timers_.begin();
    timer_deadlines_.erase(it->second.first);
    due.push_back(std::move(it->second.second));
    timers_.erase(it);
  }
  for (auto& t : due) t();
}

void EventLoop::RunTasks() {
  std::vector<Task> tasks;
  {
    std::lock_guard<std::mutex> lock(tasks_mu_);
    tasks.swap(tasks_);
  }
  for (auto& t : tasks) t();
}

void EventLoop::RunOnce(int timeout_ms) {
  epoll_event events[kMaxEvents];
  int n = epoll_wait(epoll_.get(), events, kMaxEvents, TimeoutFor(timeout_ms));
  if (n < 0 && errno != EINTR) throw VmmError(ErrorCode::kState, WithErrno("epoll_wait"));
  for (int i = 0; i < n; i++) {
    // A copy: epoll_event is packed on x86-64, so its u64 is misaligned and must not be bound to
    // the reference find() takes (UBSan reported it under the vsock fuzz target).
    const uint64_t token = events[i].data.u64;
    if (token == kWakeToken) {
      DrainWakeups();
      continue;
    }
    auto it = registrations_.find(token);
    if (it == registrations_.end()) continue;  // removed by an earlier callback in this batch
    std::shared_ptr<Registration> reg = it->second;  // keeps the callback alive if it removes itself
    reg->cb(events[i].events);
  }
  RunTimers();
  RunTasks();
}

}  // namespace stencil
