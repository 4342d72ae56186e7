#include "vmm_thread.h"

#include <pthread.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <mutex>

#include "error.h"

namespace stencil {
namespace {

std::thread Spawn(const std::string& name, ThreadRole role, std::function<void()> body) {
  std::thread t([role, body = std::move(body)] {
    if (seccomp::Enabled()) {
      std::string error = seccomp::ConfineCurrentThread(role);
      if (!error.empty()) {
        std::fprintf(stderr, "stencil-vmm: a %s thread could not confine itself: %s\n", ThreadRoleName(role), error.c_str());
        std::abort();
      }
    }
    body();
  });
  pthread_setname_np(t.native_handle(), name.substr(0, 15).c_str());
  return t;
}

struct LaunchRequest {
  std::string name;
  ThreadRole role;
  std::function<void()> body;
  std::promise<std::thread> started;
};

// Lives as long as the process (never joined: it may be needed until the last VMM thread ends).
class Launcher {
 public:
  Launcher() {
    std::thread([this] { Loop(); }).detach();
  }

  std::thread Launch(const std::string& name, ThreadRole role, std::function<void()> body) {
    LaunchRequest req{name, role, std::move(body), {}};
    std::future<std::thread> started = req.started.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(&req);
    }
    cv_.notify_one();
    return started.get();  // rethrows what std::thread threw (e.g. EAGAIN)
  }

 private:
  void Loop() {
    pthread_setname_np(pthread_self(), "vmm-launcher");
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty(); });
      LaunchRequest* req = queue_.front();
      queue_.pop_front();
      lock.unlock();
      try {
        req->started.set_value(Spawn(req->name, req->role, std::move(req->body)));
      } catch (...) {
        req->started.set_exception(std::current_exception());
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<LaunchRequest*> queue_;
};

Launcher* g_launcher = nullptr;
std::once_flag g_launcher_once;

}  // namespace

void StartThreadLauncher() {
  std::call_once(g_launcher_once, [] { g_launcher = new Launcher(); });
}

std::thread StartVmmThread(const std::string& name, ThreadRole role, std::function<void()> body) {
  if (seccomp::CurrentThreadConfined()) {
    if (!g_launcher) throw VmmError(ErrorCode::kState, "a confined thread started a thread before the launcher existed");
    return g_launcher->Launch(name, role, std::move(body));
  }
  return Spawn(name, role, std::move(body));
}

}  // namespace stencil
