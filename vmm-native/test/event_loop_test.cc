// EventLoop: fd callbacks, timers, cross-thread posts, and registrations removed mid-batch.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <vector>

#include "../src/error.h"
#include "../src/event_loop.h"

using namespace stencil;
using namespace std::chrono_literals;

namespace {
void Signal(int fd) {
  uint64_t one = 1;
  ASSERT_EQ(write(fd, &one, sizeof one), 8);
}
}  // namespace

TEST(EventLoop, DispatchesReadyFds) {
  EventLoop loop;
  UniqueFd a(eventfd(0, EFD_NONBLOCK)), b(eventfd(0, EFD_NONBLOCK));
  std::vector<int> seen;
  loop.Add(a.get(), EPOLLIN, [&](uint32_t ev) {
    EXPECT_TRUE(ev & EPOLLIN);
    uint64_t v;
    ASSERT_EQ(read(a.get(), &v, 8), 8);
    seen.push_back(1);
  });
  loop.Add(b.get(), EPOLLIN, [&](uint32_t) { seen.push_back(2); });
  Signal(a.get());
  loop.RunOnce(1000);
  EXPECT_EQ(seen, std::vector<int>{1});
  loop.Modify(b.get(), 0);
  Signal(b.get());
  loop.RunOnce(10);
  EXPECT_EQ(seen.size(), 1u) << "no interest, no callback";
  EXPECT_THROW(loop.Add(a.get(), EPOLLIN, [](uint32_t) {}), VmmError);
}

TEST(EventLoop, RegistrationRemovedEarlierInTheBatchIsNotCalled) {
  EventLoop loop;
  UniqueFd a(eventfd(0, EFD_NONBLOCK)), b(eventfd(0, EFD_NONBLOCK));
  int calls = 0;
  // Whichever runs first removes the other (and itself): exactly one callback runs.
  loop.Add(a.get(), EPOLLIN, [&](uint32_t) { calls++, loop.Remove(b.get()), loop.Remove(a.get()); });
  loop.Add(b.get(), EPOLLIN, [&](uint32_t) { calls++, loop.Remove(a.get()), loop.Remove(b.get()); });
  Signal(a.get());
  Signal(b.get());
  loop.RunOnce(1000);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(loop.Registered(a.get()));
  EXPECT_FALSE(loop.Registered(b.get()));
}

TEST(EventLoop, TimersFireInOrderAndCanBeCancelled) {
  EventLoop loop;
  std::vector<int> fired;
  loop.AddTimer(30ms, [&] { fired.push_back(2); });
  auto cancelled = loop.AddTimer(10ms, [&] { fired.push_back(99); });
  loop.AddTimer(5ms, [&] { fired.push_back(1); });
  loop.CancelTimer(cancelled);
  auto start = std::chrono::steady_clock::now();
  while (fired.size() < 2 && std::chrono::steady_clock::now() - start < 2s) loop.RunOnce(-1);
  EXPECT_EQ(fired, (std::vector<int>{1, 2}));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 25ms);
}

TEST(EventLoop, ThreadRunsPostedTasksAndStops) {
  EventLoop loop;
  UniqueFd fd(eventfd(0, EFD_NONBLOCK));
  std::promise<bool> in_loop;
  std::atomic<int> events{0};
  loop.Add(fd.get(), EPOLLIN, [&](uint32_t) {
    uint64_t v;
    if (read(fd.get(), &v, 8) == 8) events++;
  });
  loop.Start("test-loop");
  EXPECT_TRUE(loop.running());
  loop.Post([&] { in_loop.set_value(loop.InLoopThread()); });
  EXPECT_TRUE(in_loop.get_future().get());
  EXPECT_FALSE(loop.InLoopThread());
  Signal(fd.get());
  auto start = std::chrono::steady_clock::now();
  while (events == 0 && std::chrono::steady_clock::now() - start < 2s) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(events.load(), 1);
  loop.Stop();
  EXPECT_FALSE(loop.running());
  // A task posted while stopped waits for the next Start.
  std::promise<void> later;
  loop.Post([&] { later.set_value(); });
  auto f = later.get_future();
  EXPECT_EQ(f.wait_for(50ms), std::future_status::timeout);
  loop.Start("test-loop");
  EXPECT_EQ(f.wait_for(2s), std::future_status::ready);
  loop.Stop();
  loop.Stop();  // idempotent
}
