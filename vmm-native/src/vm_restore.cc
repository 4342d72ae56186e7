// The restore path: a VM rebuilt from a snapshot instead of booted. No kernel is loaded and no
// boot state is written; RAM is the snapshot's memory file mapped copy-on-write (pages fault
// in on demand, the file is never written), and every saved state is loaded into a shell. The
// RAM may also come from a file of the caller's (QEMU's mem-path with x-ignore-shared): mapped
// the same way, or shared when the caller wants the clone's writes to land in that file. A live
// migration's arriving VM is built the same way from the stream's header while its RAM streams
// in, and takes its saved state once the stream has ended.
#include "error.h"
#include "snapshot/snapshot.h"
#include "vm.h"

namespace stencil {

namespace {

// The saved configuration (a snapshot's, or an arriving VM's) with the caller's identity and
// host-side overrides applied.
VmConfig RestoredConfig(const VmConfig& saved, const RestoreOptions& options, bool ram_given) {
  VmConfig config = saved;
  const std::string origin = options.origin.empty() ? options.snapshot_dir : options.origin;
  auto mismatch = [&](const std::string& what, uint64_t wanted, uint64_t saved) {
    throw VmmError(ErrorCode::kSnapshot, "snapshot " + origin + " has " + what + " " +
                                             std::to_string(saved) + ", the restoring VM asks for " + std::to_string(wanted));
  };
  if (options.expect_vcpus && options.expect_vcpus != config.vcpus) mismatch("vCPU count", options.expect_vcpus, config.vcpus);
  if (options.expect_memory && options.expect_memory != config.memory.size)
    mismatch("memory size (bytes)", options.expect_memory, config.memory.size);
  if (options.vsock_guest_cid || !options.vsock_uds_path.empty()) {
    if (config.vsock.guest_cid == 0)
      throw VmmError(ErrorCode::kSnapshot, "snapshot " + origin + " has no vsock device to give a CID or socket");
    if (options.vsock_guest_cid) config.vsock.guest_cid = options.vsock_guest_cid;
    if (!options.vsock_uds_path.empty()) config.vsock.uds_path = options.vsock_uds_path;
  }
  if (options.net_backend_fd >= 0 || options.net_mac) {
    if (!config.net.enabled)
      throw VmmError(ErrorCode::kSnapshot, "snapshot " + origin + " has no virtio-net device to give a backend or MAC");
    config.net.backend_fd = options.net_backend_fd;
    if (options.net_mac) config.net.mac = *options.net_mac;
  }
  for (const auto& [tag, path] : options.share_paths) {
    bool found = false;
    for (auto& share : config.shares)
      if (share.tag == tag) share.host_path = path, found = true;
    if (!found) throw VmmError(ErrorCode::kSnapshot, "snapshot " + origin + " has no share tagged '" + tag + "'");
  }
  config.memory.backing = MemoryBacking::kTmpfsFile;
  config.memory.keep_file = true;
  if (ram_given) return config;  // the caller's RAM, already filled
  if (options.memory_path.empty()) {
    if (options.snapshot_dir.empty())
      throw VmmError(ErrorCode::kSnapshot, origin + " carries no guest RAM: the restore needs a memory file (memoryPath)");
    if (options.memory_shared)
      throw VmmError(ErrorCode::kInvalidArgument, "a snapshot's own memory file is only mapped copy-on-write, never shared");
    config.memory.directory = options.snapshot_dir;
    config.memory.name = kSnapshotMemoryFile;
  } else {
    size_t slash = options.memory_path.rfind('/');
    if (options.memory_path.front() != '/' || slash + 1 == options.memory_path.size())
      throw VmmError(ErrorCode::kInvalidArgument, "memory file '" + options.memory_path + "' must be an absolute file path");
    config.memory.directory = slash == 0 ? "/" : options.memory_path.substr(0, slash);
    config.memory.name = options.memory_path.substr(slash + 1);
  }
  if (options.memory_shared) {
    config.memory.sharing = MemorySharing::kShared;
    config.memory.open_existing = true;
  } else {
    config.memory.sharing = MemorySharing::kPrivateCopyOnWrite;
  }
  return config;
}

}  // namespace

Vm::Vm(VmShell shell, const Snapshot& snapshot, const RestoreOptions& options, VmCallbacks callbacks)
    : config_(RestoredConfig(snapshot.config.vm, options, false)), callbacks_(std::move(callbacks)) {
  if (shell.vcpu_count() != config_.vcpus)
    throw VmmError(ErrorCode::kSnapshot, "VM shell has " + std::to_string(shell.vcpu_count()) + " vCPUs, the snapshot has " +
                                             std::to_string(config_.vcpus));
  AdoptShell(std::move(shell));
  if (reserved_memory_.base()) {
    if (reserved_memory_.size() != config_.memory.size)
      throw VmmError(ErrorCode::kSnapshot, "VM shell reserved " + std::to_string(reserved_memory_.size()) +
                                               " bytes of RAM, the snapshot has " +
                                               std::to_string(config_.memory.size));
    config_.memory.fixed_address = reserved_memory_.base();
    memory_ = std::make_shared<GuestMemory>(config_.memory);
    reserved_memory_.Release();  // RAM is mapped over the slots the shell registered
  } else {
    memory_ = std::make_shared<GuestMemory>(config_.memory);
    SetupMemorySlots();
  }
  exit_stats_.TimePhase("devices", [&] { SetupDevices(); });
  devices_->CheckLayout(snapshot.layout);
  cmdline_ = snapshot.config.cmdline;
  kernel_sha256_ = snapshot.config.kernel_sha256;
  initrd_sha256_ = snapshot.config.initrd_sha256;
  LoadSavedState(snapshot);
}

Vm::Vm(VmShell shell, const VmDescription& description, const RestoreOptions& options, std::shared_ptr<GuestMemory> ram,
       VmCallbacks callbacks)
    : config_(RestoredConfig(description.config.vm, options, true)), callbacks_(std::move(callbacks)) {
  if (!ram) throw VmmError(ErrorCode::kInvalidArgument, "an arriving VM needs its RAM");
  if (shell.vcpu_count() != config_.vcpus)
    throw VmmError(ErrorCode::kSnapshot, "VM shell has " + std::to_string(shell.vcpu_count()) + " vCPUs, the arriving VM has " +
                                             std::to_string(config_.vcpus));
  if (shell.memory.base()) throw VmmError(ErrorCode::kInvalidArgument, "a VM shell with reserved RAM cannot take received RAM");
  if (ram->size() != config_.memory.size)
    throw VmmError(ErrorCode::kSnapshot, "received RAM has " + std::to_string(ram->size()) + " bytes, the arriving VM has " +
                                             std::to_string(config_.memory.size));
  if (shell.ram_slots_base && shell.ram_slots_base != ram->base())
    throw VmmError(ErrorCode::kInvalidArgument, "the VM shell's RAM slots point elsewhere than the received RAM");
  const bool slots_ready = shell.ram_slots_base != nullptr;
  AdoptShell(std::move(shell));
  memory_ = std::move(ram);
  if (!slots_ready) SetupMemorySlots();
  exit_stats_.TimePhase("devices", [&] { SetupDevices(); });
  devices_->CheckLayout(description.layout);
  cmdline_ = description.config.cmdline;
  kernel_sha256_ = description.config.kernel_sha256;
  initrd_sha256_ = description.config.initrd_sha256;
  std::lock_guard<std::mutex> lock(mu_);
  awaiting_state_ = true;
  try {
    exit_stats_.TimePhase("vcpu-threads", [&] { StartVcpuThreads(); });
  } catch (...) {
    stop_ = true;  // no destructor runs for a constructor that throws: end the threads made
    resume_cv_.notify_all();
    mu_.unlock();
    for (auto& v : vcpus_)
      if (v->thread.joinable()) v->thread.join();
    mu_.lock();
    throw;
  }
}

void Vm::LoadArrivedState(const Snapshot& snapshot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!awaiting_state_) throw VmmError(ErrorCode::kState, "this VM is not waiting for an arriving state");
  }
  if (snapshot.vcpus.size() != vcpus_.size())
    throw VmmError(ErrorCode::kSnapshot, "the arriving state has " + std::to_string(snapshot.vcpus.size()) + " vCPUs, the VM built has " +
                                             std::to_string(vcpus_.size()));
  devices_->CheckLayout(snapshot.layout);
  LoadSavedState(snapshot);
  std::lock_guard<std::mutex> lock(mu_);
  awaiting_state_ = false;
}

void Vm::LoadSavedState(const Snapshot& snapshot) {
  // The irqchip first: device restore may raise interrupts (vsock's transport reset).
  exit_stats_.TimePhase("restore-vm-state", [&] { snapshot.vm.Restore(vm_.get()); });
  exit_stats_.TimePhase("restore-vcpus", [&] {
    for (size_t i = 0; i < vcpus_.size(); i++) {
      snapshot.vcpus[i].Restore(vcpus_[i]->fd.get());
      snapshot.vcpus[i].ClearPvEoiPending(*memory_);
    }
  });
  exit_stats_.TimePhase("restore-devices", [&] {
    for (size_t i = 0; i < devices_->count(); i++) {
      ByteReader in(snapshot.devices[i], "saved state of " + snapshot.layout[i].Describe());
      devices_->device(i).RestoreState(in);
      in.ExpectEnd();
    }
  });
}

}  // namespace stencil
