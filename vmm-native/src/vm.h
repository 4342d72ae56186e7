// A microVM: KVM VM + guest memory + vCPU threads + devices. Generic code; the x86 specifics
// (boot protocol, CPUID, MP table, register setup) live in arch/x86.
#pragma once
#include "kvm_headers.h"

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "devices/bus.h"
#include "devices/serial.h"
#include "exit_stats.h"
#include "fd.h"
#include "memory.h"
#include "virtio/blk.h"

namespace stencil {

enum class ExitReason {
  kNone,
  kReboot,         // guest asked for a reset (i8042 0xFE)
  kPoweroff,       // guest powered off (ACPI sleep state S5)
  kTripleFault,    // KVM_EXIT_SHUTDOWN
  kInternalError,  // KVM could not run the guest (emulation failure, ...)
  kFailEntry,      // hardware refused VM entry
  kStopped,        // the host stopped the VM
  kVmmError,       // the VMM hit an unrecoverable error
};
const char* ExitReasonName(ExitReason r);

// A host directory shared with the guest over virtio-9p (9P2000.L).
struct SharedDirectory {
  std::string tag;        // the mount source in the guest: [A-Za-z0-9_.-], at most 64 bytes, unique
  std::string host_path;  // absolute path of an existing directory
  bool read_only = false;
};

// virtio-vsock in hybrid mode (see virtio/vsock/muxer.h): the host side is Unix sockets.
struct VsockConfig {
  uint32_t guest_cid = 0;  // 0: no vsock device; otherwise 3..4294967294
  std::string uds_path;    // host-initiated: CONNECT <port> on this socket; guest-initiated: <uds_path>_<port>
};

struct VmConfig {
  uint32_t vcpus = 1;
  MemoryOptions memory;
  std::string kernel_path;
  std::string initrd_path;  // optional
  std::string cmdline;      // device declarations are appended by the VMM
  bool virtio_rng = true;
  std::vector<BlockDeviceConfig> disks;  // guest sees them as /dev/vda, /dev/vdb, ... in order
  std::vector<SharedDirectory> shares;   // virtio-9p: mount -t 9p -o trans=virtio <tag> <dir>
  VsockConfig vsock;                     // optional: guest_cid 0 leaves it out
};

struct VmCallbacks {
  std::function<void(const uint8_t*, size_t)> console;          // guest console output (vCPU thread)
  std::function<void()> paused;                                 // every vCPU is parked
  std::function<void(ExitReason, const std::string&)> exited;   // every vCPU thread has left its loop
};

class Vm {
 public:
  // Creates the VM, loads kernel/initrd and prepares boot state. Throws VmmError; nothing
  // (fds, mappings, RAM file) is left behind on failure.
  Vm(const VmConfig& config, VmCallbacks callbacks);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  void Start();
  void RequestPause();  // returns at once; callbacks.paused fires when all vCPUs are parked
  void Resume();
  void Stop();          // stops and joins the vCPU threads (exited fires if it had not)
  void SendConsoleInput(const uint8_t* data, size_t len);
  // Exit counts by reason, the `top_n` busiest ports and MMIO addresses, setup phase timings.
  ExitStatsReport Stats(size_t top_n) const;

  const GuestMemory& memory() const { return *memory_; }
  const std::string& cmdline() const { return cmdline_; }
  bool running() const { return started_ && !finished_; }

 private:
  struct Vcpu {
    uint32_t index;
    UniqueFd fd;
    kvm_run* run = nullptr;
    std::thread thread;
  };

  void CreateVm();
  void SetupMemorySlots();
  void SetupDevices();
  void LoadGuest();
  void CreateVcpus();
  void VcpuLoop(Vcpu& vcpu);
  bool HandleExit(Vcpu& vcpu);  // false: the VM is finished
  void Finish(ExitReason reason, const std::string& detail);
  void KickAll();

  VmConfig config_;
  VmCallbacks callbacks_;
  UniqueFd kvm_;
  UniqueFd vm_;
  int run_mmap_size_ = 0;
  std::unique_ptr<GuestMemory> memory_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  Bus pio_bus_, mmio_bus_;
  std::vector<std::unique_ptr<IrqLine>> irqs_;
  std::shared_ptr<Serial> serial_;
  std::string cmdline_;
  std::string cmdline_extra_;  // virtio-mmio device declarations
  uint64_t entry_point_ = 0;
  ExitStats exit_stats_;

  std::mutex mu_;
  std::condition_variable resume_cv_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> pause_requested_{false};
  uint32_t parked_ = 0;
  uint32_t running_threads_ = 0;
  bool started_ = false;
  bool finished_ = false;
  ExitReason exit_reason_ = ExitReason::kNone;
  std::string exit_detail_;
};

}  // namespace stencil
