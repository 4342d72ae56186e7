// A microVM: KVM VM + guest memory + vCPU threads + devices. Generic code; the x86 specifics
// (boot protocol, CPUID, MP table, register setup) live in arch/x86.
#pragma once
#include "kvm_headers.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "arch/x86/vcpu_trace.h"
#include "devices/bus.h"
#include "devices/device_manager.h"
#include "devices/serial.h"
#include "exit_stats.h"
#include "fd.h"
#include "memory.h"
#include "virtio/blk.h"
#include "vm_config.h"
#include "vm_shell.h"

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

struct Snapshot;
struct SnapshotBytes;
struct SnapshotConfig;
struct VmDescription;

// Where a saved snapshot's RAM comes from (Vm::SaveSnapshot).
enum class SnapshotMemory {
  kLinkTemplate,  // the VM's tmpfs RAM file becomes dir/memory (a hard link); the VM never runs again
  kCopy,          // guest RAM is copied sparsely into dir/memory; the VM may run on afterwards
};

// How a VM restored from a snapshot may differ from the snapshot's own configuration (which it
// otherwise takes whole): the clone's identity and host-side wiring.
struct RestoreOptions {
  std::string snapshot_dir;
  uint32_t vsock_guest_cid = 0;  // 0: the snapshot's
  std::string vsock_uds_path;    // empty: the snapshot's
  std::vector<std::pair<std::string, std::string>> share_paths;  // tag -> host path
  // The restored virtio-net's backend (a tap; -1: none) and MAC (the guest keeps the MAC it read
  // at boot until told otherwise: the shim's agent sets the new one).
  int net_backend_fd = -1;
  std::optional<VirtioNet::Mac> net_mac;
  uint32_t expect_vcpus = 0;     // non-zero: refuse a snapshot with another count
  uint64_t expect_memory = 0;    // non-zero: refuse a snapshot with another RAM size
  // RAM from this file instead of snapshot_dir/memory (QEMU's mem-path with x-ignore-shared):
  // mapped copy-on-write, or shared (the file is the clone's RAM and changes with it).
  std::string memory_path;
  bool memory_shared = false;
  // Names the snapshot in errors when it did not come from snapshot_dir (a migration stream).
  std::string origin;
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
  // Restore path (vm_restore.cc): the VM of `snapshot` on `shell` (created beforehand, with the
  // snapshot's vCPU count), RAM mapped copy-on-write from the snapshot's memory file, every
  // vCPU, VM and device state loaded. Nothing runs until Start.
  Vm(VmShell shell, const Snapshot& snapshot, const RestoreOptions& options, VmCallbacks callbacks);
  // A live migration's arriving VM (vm_restore.cc), built from the stream's header while its RAM
  // (`ram`, registered by the shell, which must not reserve memory) still streams in: devices made
  // and vCPU threads waiting, so that once the stream ends only LoadArrivedState and Start remain
  // on the downtime's path. options' memory fields are ignored.
  Vm(VmShell shell, const VmDescription& description, const RestoreOptions& options, std::shared_ptr<GuestMemory> ram,
     VmCallbacks callbacks);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  void Start(bool paused = false);  // paused: the vCPUs park before their first instruction
  // An arriving VM's final state, which must describe the VM built (vCPUs, device layout).
  void LoadArrivedState(const Snapshot& snapshot);
  bool awaiting_state() const { return awaiting_state_; }
  // Returns at once; callbacks.paused fires when every vCPU is parked with its last instruction
  // complete and the devices are quiescent (nothing writes guest RAM until Resume).
  void RequestPause();
  void Resume();
  // Template mode (vm_snapshot.cc): writes dir/state and dir/config for a paused VM whose RAM is
  // a tmpfs file, and makes that file dir/memory (a hard link: no copy). The VM is a template
  // from then on: it may be destroyed but never resumed. Throws VmmError naming what is wrong.
  // kCopy: a paused VM with any RAM is saved into `dir`, which must not exist or be empty: the
  // files are written in a temporary sibling directory renamed to `dir` at the end, so `dir`
  // is either complete or untouched. The VM stays paused and may be resumed.
  void SaveSnapshot(const std::string& dir, SnapshotMemory memory = SnapshotMemory::kLinkTemplate);
  // The paused VM's state and config without its RAM (a migration stream with x-ignore-shared:
  // RAM stays in the shared file). The VM stays paused and may be resumed.
  SnapshotBytes SaveState();
  void Stop();          // stops and joins the vCPU threads (exited fires if it had not)
  void SendConsoleInput(const uint8_t* data, size_t len);
  // An NMI on every vCPU (QMP inject-nmi), delivered before each one's next entry into the guest;
  // a paused VM gets it when it resumes. A Linux guest told unknown_nmi_panic panics: how a host
  // makes a hung guest print where it is stuck.
  void InjectNmi();
  // Exit counts by reason, the `top_n` busiest ports and MMIO addresses, setup phase timings.
  // Exit counts; a paused VM's vCPU registers too.
  ExitStatsReport Stats(size_t top_n);

  // Live migration support (vm_migration.cc). The dirty log covers the guest's writes (KVM's
  // log on every memory slot) and the devices' (GuestMemory's own marks).
  // The configuration and device layout a destination checks before it accepts the VM.
  VmDescription Describe();
  void StartDirtyLog();
  void StopDirtyLog();
  // ORs the pages written since the last call (or StartDirtyLog) into `bitmap`, one bit per page
  // in RAM-file order, and clears them.
  void CollectDirtyPages(std::vector<uint64_t>& bitmap);
  // Pauses (if not paused) and waits until every vCPU is parked and the devices are quiescent.
  // False if the VM finished or `timeout` passed first.
  bool PauseAndWait(std::chrono::milliseconds timeout);
  bool paused();
  // Slows the guest down so a migration can converge: every vCPU sleeps `percent` of each 10 ms
  // (0: full speed). Cleared by Stop.
  void SetThrottle(uint32_t percent);

  const GuestMemory& memory() const { return *memory_; }
  // Its virtio-net device has a backend (a tap): a migration's destination must give it one too.
  bool nic_wired() const { return config_.net.enabled && config_.net.backend_fd >= 0; }
  const std::string& cmdline() const { return cmdline_; }
  bool running() const { return started_ && !finished_; }

 private:
  struct Vcpu {
    uint32_t index;
    UniqueFd fd;
    UniqueFd stats;  // KVM's binary stats, readable while the vCPU runs (exit_stats.h)
    kvm_run* run = nullptr;
    std::thread thread;
    x86::ExitTrace trace;  // the last exits, for the report of a crash
    std::atomic<bool> nmi_pending{false};  // InjectNmi's request, taken by this vCPU's own thread
  };

  void CreateVm();
  void AdoptShell(VmShell shell);
  Snapshot CaptureSnapshot();  // with mu_ held and the VM paused
  SnapshotConfig CaptureConfig();  // the kernel and initrd hashed once, not on every save
  void SaveTemplate(const std::string& dir);  // kLinkTemplate, with mu_ held
  void SaveCopy(const std::string& dir);      // kCopy, with mu_ held
  void SetupMemorySlots();
  void SetupDevices();
  void LoadSavedState(const Snapshot& snapshot);  // VM, vCPU and device state, in that order
  void StartVcpuThreads();  // with mu_ held; the threads wait until started_
  void LoadGuest();
  void CreateVcpus();
  void VcpuLoop(Vcpu& vcpu);
  bool HandleExit(Vcpu& vcpu);  // false: the VM is finished
  void Finish(ExitReason reason, const std::string& detail);
  void KickAll();
  void ThrottleLoop();
  void ThrottleSleep();  // on a vCPU thread after a kick, while throttled

  VmConfig config_;
  VmCallbacks callbacks_;
  UniqueFd kvm_;
  UniqueFd vm_;
  int run_mmap_size_ = 0;
  MemoryReservation reserved_memory_;  // a shell's pre-registered RAM range, until RAM maps over it
  std::shared_ptr<GuestMemory> memory_;  // shared with an incoming migration still filling it
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  Bus pio_bus_, mmio_bus_;
  std::unique_ptr<DeviceManager> devices_;
  std::shared_ptr<Serial> serial_;
  std::string cmdline_;
  std::string cmdline_extra_;  // virtio-mmio device declarations
  uint64_t entry_point_ = 0;
  std::vector<uint32_t> msr_indexes_;  // saveable MSRs, computed at the first snapshot
  std::string template_dir_;           // set once the VM has become a template
  std::string kernel_sha256_, initrd_sha256_;  // CaptureConfig's, or the snapshot's for a restored VM
  ExitStats exit_stats_;

  std::mutex mu_;
  std::condition_variable resume_cv_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> pause_requested_{false};
  std::condition_variable paused_cv_;  // PauseAndWait
  std::atomic<uint32_t> throttle_percent_{0};
  std::thread throttle_thread_;
  bool dirty_log_ = false;
  uint32_t parked_ = 0;
  bool paused_ = false;  // every vCPU parked and the devices quiesced
  uint32_t running_threads_ = 0;
  bool started_ = false;
  bool awaiting_state_ = false;  // an arriving VM before LoadArrivedState
  bool finished_ = false;
  ExitReason exit_reason_ = ExitReason::kNone;
  std::string exit_detail_;
};

}  // namespace stencil
