// /dev/kvm access: opening it with errors a user can act on, capability checks, vCPU kicks.
#pragma once
#include <pthread.h>

#include <string>

#include "fd.h"

namespace stencil {

// Opens /dev/kvm (or $STENCIL_KVM_DEVICE for tests) and checks the API version.
// Throws VmmError(kKvmUnavailable) with the reason (missing, permission, version).
UniqueFd OpenKvm();
int CheckExtension(int fd, long cap);
// ioctl that throws VmmError(kKvm) "<what>: <errno text>" on failure.
void CheckedIoctl(int fd, unsigned long request, void* arg, const char* what);
// KVM_CREATE_VM on /dev/kvm: a new VM's fd, or -1 with errno. A signal landing while the kernel
// sets the VM up (e.g. SIGCHLD in Node's process) makes it fail with EINTR having created nothing:
// it is made again then, as POSIX calls interrupted before doing anything are.
int CreateVmFd(int kvm_fd);

// Signal used to kick a vCPU thread out of KVM_RUN; installed once, no SA_RESTART.
int KickSignal();
void InstallKickHandler();

struct KvmProbe {
  bool available = false;        // /dev/kvm opened and a VM could be created
  std::string error;             // why not, if !available
  int api_version = 0;
  bool runs_stock_guests = false;  // guest kernel mode runs at a usable speed, no emulation failure
  double kernel_mode_mips = 0;     // millions of loop iterations per second at CPL0
  std::string detail;              // what the probe saw
};

// Runs a tiny long-mode guest at CPL0 and measures it: on a hardware (or nested) KVM the loop
// runs at tens of millions of iterations per second or more; where guest kernel mode is emulated
// instruction by instruction (kvm_pvm) it runs ~1000x slower. Takes at most ~5 s.
KvmProbe ProbeKvm();

}  // namespace stencil
