// Starting the VMM's threads: each confines itself to its role's seccomp allow-list when filters
// are enabled (host/seccomp.h). A thread inherits its creator's filter on top of its own, so a
// confined thread (a vCPU activating a device, a device loop) does not create threads itself: it
// asks the launcher, an unconfined thread started with the filters, and waits for the new thread.
#pragma once

#include <functional>
#include <string>
#include <thread>

#include "host/seccomp.h"

namespace stencil {

// Runs `body` on a new thread named `name` (at most 15 characters are kept), confined to `role`
// when filters are enabled. A thread that cannot confine itself ends the process with a message
// (the probe in seccomp::Enable makes that a kernel change under a running VMM).
std::thread StartVmmThread(const std::string& name, ThreadRole role, std::function<void()> body);

// The launcher confined threads start their threads through (seccomp::Enable starts it).
void StartThreadLauncher();

}  // namespace stencil
