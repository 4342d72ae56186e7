// Running a host call inside another network namespace (a pod's, the one CNI set up). setns moves
// only the calling thread, so the call runs on a short-lived thread that entered the namespace:
// the process's other threads stay where they are, and no other code ever runs in the pod's
// namespace. Sockets and taps opened there belong to the process and stay in that namespace.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <exception>
#include <string>
#include <thread>
#include <utility>

#include "../error.h"
#include "../fd.h"

namespace stencil {

// Runs fn() in the network namespace at netns_path (on this thread when the path is empty) and
// returns its result. `what` names the operation in errors.
template <typename Fn>
auto RunInNetns(const std::string& netns_path, const std::string& what, Fn&& fn) -> decltype(fn()) {
  if (netns_path.empty()) return fn();
  UniqueFd ns(open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": open the namespace " + netns_path));
  decltype(fn()) result{};
  std::exception_ptr error;
  std::thread worker([&] {
    try {
      if (setns(ns.get(), CLONE_NEWNET) < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(what + ": setns " + netns_path));
      result = fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  worker.join();
  if (error) std::rethrow_exception(error);
  return result;
}

}  // namespace stencil
