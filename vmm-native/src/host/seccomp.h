// seccomp allow-lists for the VMM's own threads (Firecracker's model): each kind of thread may make
// the system calls its work needs and no others. A thread that makes another one ends the process
// (it runs in the shim, so the pod fails and nothing else), after a line on stderr naming the
// thread and the call. Some calls are checked further by their arguments (ArgumentRules): ioctl
// only with KVM's requests, socket only in the families the thread's work uses, no executable
// mappings. Each thread also drops the capabilities its work does not need.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace stencil {

// What a VMM thread does, and so what it may ask of the kernel.
enum class ThreadRole {
  kVcpu,       // KVM_RUN and the device registers it reaches (a device it activates gets its
               // threads from the launcher: see StartVmmThread)
  kDevice,     // a device's event loop: vsock and tap sockets, timers
  kBlockIo,    // virtio-blk's worker: reads and writes of the disk image
  kFileShare,  // a 9p share's worker: file system calls under the shared directory
  kMigration,  // a live migration's sender or receiver: sockets, RAM files, a new VM's KVM shell
  kThrottle,   // auto-converge's vCPU throttle: sleeps and kicks
};

const char* ThreadRoleName(ThreadRole role);

namespace seccomp {

// The system call numbers a thread of `role` may make.
std::vector<long> AllowedSyscalls(ThreadRole role);

// A check on one argument of an allowed call (its low 32 bits, where every value these rules
// name lives: the kernel takes an ioctl's request and a socket's family as 32-bit ints): either
// one of `one_of`, or (with `one_of` empty) none of `forbidden_bits` set.
struct ArgumentRule {
  long nr;  // the system call
  int arg;
  std::vector<uint32_t> one_of;
  uint32_t forbidden_bits = 0;
};

// The argument checks for a thread of `role`, for calls its list allows.
std::vector<ArgumentRule> ArgumentRules(ThreadRole role);

// From now on, every VMM thread started by StartVmmThread confines itself to its role's list.
// Process-wide and for good (a filter cannot be lifted). Call it from a thread that is not
// confined (the addon's): it starts the launcher confined threads start their threads through,
// and checks that this kernel installs filters. Throws VmmError if not.
void Enable();
bool Enabled();

// Whether the calling thread is confined (then threads it starts would inherit its filter).
bool CurrentThreadConfined();

// The capabilities (a bit per CAP_*) a thread of `role` keeps; the others are dropped.
uint64_t KeptCapabilities(ThreadRole role);

// Confines the calling thread: drops the capabilities its role does not keep (they are per
// thread), sets no_new_privs, installs its role's allow-list. Returns "" or what failed.
std::string ConfineCurrentThread(ThreadRole role);

}  // namespace seccomp
}  // namespace stencil
