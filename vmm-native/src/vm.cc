#include "vm.h"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>

#include "arch/x86/acpi.h"
#include "arch/x86/boot_params.h"
#include "arch/x86/cpu_setup.h"
#include "arch/x86/cpuid.h"
#include "arch/x86/layout.h"
#include "arch/x86/mptable.h"
#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "error.h"
#include "kvm.h"
#include "loader/kernel_image.h"
#include "virtio/mmio.h"
#include "virtio/net.h"
#include "virtio/p9/device.h"
#include "virtio/rng.h"
#include "virtio/vsock/device.h"
#include "vmm_thread.h"

namespace stencil {

const char* ExitReasonName(ExitReason r) {
  switch (r) {
    case ExitReason::kNone: return "none";
    case ExitReason::kReboot: return "reboot";
    case ExitReason::kPoweroff: return "poweroff";
    case ExitReason::kTripleFault: return "triple-fault";
    case ExitReason::kInternalError: return "internal-error";
    case ExitReason::kFailEntry: return "fail-entry";
    case ExitReason::kStopped: return "stopped";
    case ExitReason::kVmmError: return "vmm-error";
  }
  return "unknown";
}

namespace {

// A kernel or initrd file, opened and checked, read with pread() straight where it is needed: a
// kernel's headers, then each segment into guest RAM (a vmlinux's symbols are never read), the
// initrd into guest RAM. The whole-file istreambuf_iterator copy this replaces went byte by byte
// (83-139 ms for 30 MB natively, read(): 11-23 ms; many times that under TCG, where CI runs).
class ImageFile {
 public:
  ImageFile(const std::string& path, const char* what) : path_(path), what_(what) {
    fd_.reset(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_.valid()) throw Error(WithErrno(Name() + " cannot be opened"));
    struct stat st {};
    if (fstat(fd_.get(), &st) < 0) throw Error(WithErrno("stat of " + Name()));
    if (!S_ISREG(st.st_mode)) throw Error(Name() + " is not a regular file");
    if (st.st_size == 0) throw Error(Name() + " is empty");
    size_ = static_cast<uint64_t>(st.st_size);
  }
  uint64_t size() const { return size_; }
  // Reads [offset, offset + len) into dst, e.g. straight into guest RAM.
  void ReadRange(uint64_t offset, uint8_t* dst, uint64_t len) const {
    if (offset > size_ || len > size_ - offset) throw Error(Name() + ": read past its end");
    for (uint64_t done = 0; done < len;) {
      ssize_t n = pread(fd_.get(), dst + done, len - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error(WithErrno("reading " + Name()));
      if (n == 0) throw Error(Name() + " shrank while being read");
      done += static_cast<uint64_t>(n);
    }
  }
  // For the image parser, which reads only the headers it needs.
  ImageReader Reader() const {
    return {size_, [this](uint64_t offset, void* dst, size_t len) {
              ReadRange(offset, static_cast<uint8_t*>(dst), len);
              return true;
            }};
  }

 private:
  std::string Name() const { return what_ + " " + path_; }
  static VmmError Error(const std::string& message) { return VmmError(ErrorCode::kKernelImage, message); }
  std::string path_, what_;
  UniqueFd fd_;
  uint64_t size_ = 0;
};

}  // namespace

Vm::Vm(const VmConfig& config, VmCallbacks callbacks) : config_(config), callbacks_(std::move(callbacks)) {
  // The limits a caller can get wrong are checked here, once for every layer above, before any
  // resource is taken (GuestMemory checks the memory size as it is created).
  if (config_.vcpus < 1 || config_.vcpus > x86::kMaxVcpus)
    throw VmmError(ErrorCode::kInvalidArgument,
                   "vcpus must be 1.." + std::to_string(x86::kMaxVcpus) + ", got " + std::to_string(config_.vcpus));
  if (config_.kernel_path.empty()) throw VmmError(ErrorCode::kInvalidArgument, "no kernel image given");
  exit_stats_.TimePhase("create-vm", [&] { CreateVm(); });
  exit_stats_.TimePhase("guest-memory", [&] {
    // A RAM file to keep (QEMU's mem-path) is kept only once the VM exists: a failed boot leaves nothing.
    MemoryOptions memory = config_.memory;
    memory.keep_file = false;
    memory_ = std::make_unique<GuestMemory>(memory);
    SetupMemorySlots();
  });
  exit_stats_.TimePhase("devices", [&] { SetupDevices(); });
  exit_stats_.TimePhase("load-guest", [&] { LoadGuest(); });
  exit_stats_.TimePhase("vcpus", [&] { CreateVcpus(); });
  if (config_.memory.keep_file) memory_->KeepFile();
}

Vm::~Vm() {
  Stop();
  // Device worker threads may still raise interrupts: stop them (by destroying the devices)
  // before the IRQ lines, which are declared after the bus and so would be destroyed first.
  mmio_bus_ = Bus();
  devices_.reset();
  for (auto& v : vcpus_)
    if (v->run) munmap(v->run, run_mmap_size_);
}

void Vm::CreateVm() { AdoptShell(VmShell::Create(config_.vcpus)); }

void Vm::AdoptShell(VmShell shell) {
  kvm_ = std::move(shell.kvm);
  vm_ = std::move(shell.vm);
  run_mmap_size_ = shell.run_mmap_size;
  for (uint32_t i = 0; i < shell.vcpus.size(); i++) {
    auto v = std::make_unique<Vcpu>();
    v->index = i;
    v->fd = std::move(shell.vcpus[i].fd);
    v->stats = OpenKvmStats(v->fd.get());
    v->run = std::exchange(shell.vcpus[i].run, nullptr);
    // KVM copies the registers into kvm_run at every exit (~100 bytes), so the exit trace has RIPs.
    if (CheckExtension(kvm_.get(), KVM_CAP_SYNC_REGS) & KVM_SYNC_X86_REGS) v->run->kvm_valid_regs = KVM_SYNC_X86_REGS;
    vcpus_.push_back(std::move(v));
  }
  reserved_memory_ = std::move(shell.memory);
}

void Vm::SetupMemorySlots() {
  uint32_t slot = 0;
  for (const auto& r : memory_->regions()) {
    kvm_userspace_memory_region region{slot++, 0, r.guest_addr, r.size, reinterpret_cast<uint64_t>(r.host_addr)};
    if (ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0)
      throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_USER_MEMORY_REGION for slot " + std::to_string(region.slot)));
  }
}

void Vm::SetupDevices() {
  // The same configuration always yields the same layout (order, addresses, IRQs): a restore
  // rebuilds it this way and checks it against the snapshot's record.
  devices_ = std::make_unique<DeviceManager>(vm_.get(), pio_bus_, mmio_bus_);
  serial_ = std::make_shared<Serial>(devices_->NewIrq(x86::kSerialIrq), [this](const uint8_t* d, size_t n) {
    exit_stats_.RecordConsoleOutput();
    if (callbacks_.console) callbacks_.console(d, n);
  });
  devices_->AddPio({"serial", false, 0x3f8, 8, x86::kSerialIrq, {}, {}}, serial_);
  devices_->AddPio({"i8042", false, 0x60, 5, 0, {}, {}},
                   std::make_shared<I8042>([this] { Finish(ExitReason::kReboot, "guest reset via i8042"); }));
  devices_->AddPio({"acpi-pm", false, x86::kPm1EventPort, x86::kPmPortsSize, 0, {}, {}},
                   std::make_shared<AcpiPm>([this] { Finish(ExitReason::kPoweroff, "guest entered ACPI S5"); }));

  auto add = [&](const char* kind, DeviceProperties guest, DeviceProperties host, std::unique_ptr<VirtioDevice> dev) {
    cmdline_extra_ += " " + devices_->AddVirtio(kind, std::move(guest), std::move(host), std::move(dev), *memory_);
  };
  auto flag = [](bool b) { return std::string(b ? "true" : "false"); };
  if (config_.virtio_rng) add("virtio-rng", {}, {}, std::make_unique<VirtioRng>());
  if (config_.vsock.guest_cid != 0) {
    vsock::MuxerOptions options;
    options.uds_path = config_.vsock.uds_path;
    add("virtio-vsock", {}, {{"guestCid", std::to_string(config_.vsock.guest_cid)}, {"udsPath", config_.vsock.uds_path}},
        std::make_unique<VirtioVsock>(config_.vsock.guest_cid, options));
  }
  if (config_.net.enabled) {
    UniqueFd backend;
    if (config_.net.backend_fd >= 0) {
      backend.reset(fcntl(config_.net.backend_fd, F_DUPFD_CLOEXEC, 0));
      if (!backend.valid())
        throw VmmError(ErrorCode::kInvalidArgument, WithErrno("virtio-net backend fd " + std::to_string(config_.net.backend_fd)));
    }
    bool wired = backend.valid();
    add("virtio-net", {}, {{"backend", wired ? "tap" : "none"}},
        std::make_unique<VirtioNet>(std::move(backend), config_.net.mac));
  }
  // Declared in configuration order, so the guest names them vda, vdb, ... in that order.
  for (const auto& disk : config_.disks)
    add("virtio-blk", {{"readOnly", flag(disk.read_only)}, {"serial", disk.serial}}, {{"path", disk.path}},
        std::make_unique<VirtioBlk>(disk));
  for (size_t i = 0; i < config_.shares.size(); i++) {
    const SharedDirectory& share = config_.shares[i];
    for (size_t j = 0; j < i; j++)
      if (config_.shares[j].tag == share.tag)
        throw VmmError(ErrorCode::kInvalidArgument, "shared directory tag '" + share.tag + "' is used twice");
    add("virtio-9p", {{"tag", share.tag}, {"readOnly", flag(share.read_only)}}, {{"hostPath", share.host_path}},
        std::make_unique<VirtioP9>(share.tag, share.host_path, share.read_only));
  }
}

void Vm::LoadGuest() {
  ImageFile image(config_.kernel_path, "kernel image");
  KernelImage kernel = ParseKernelImage(image.Reader(), config_.kernel_path);
  for (const auto& seg : kernel.segments) {
    uint8_t* dst = memory_->Translate(seg.guest_addr, seg.mem_size);
    if (!dst)
      throw VmmError(ErrorCode::kKernelImage, "kernel " + config_.kernel_path + " needs guest memory up to " +
                                                  Hex(seg.guest_addr + seg.mem_size) + ", beyond this VM's RAM");
    image.ReadRange(seg.file_offset, dst, seg.file_size);
    // Fresh guest RAM (a new tmpfs file or memfd) reads as zeros already. Clearing it anyway
    // faulted in a bzImage's whole decompression area (init_size, 18 MiB here): 1.2 s in the
    // emulated host (load 1440 -> 180 ms).
    if (config_.memory.sharing != MemorySharing::kShared)
      std::memset(dst + seg.file_size, 0, seg.mem_size - seg.file_size);
  }
  entry_point_ = kernel.entry_point;

  x86::BootParamsInput params{&kernel, x86::kCmdlineAddr, 0};
  if (!config_.initrd_path.empty()) {
    ImageFile initrd(config_.initrd_path, "initrd");
    params.initrd_size = initrd.size();
    params.initrd_addr =
        x86::PlaceInitrd(memory_->LowMemoryEnd(), kernel.kernel_end, kernel.initrd_addr_max, initrd.size());
    uint8_t* dst = memory_->Translate(params.initrd_addr, initrd.size());
    if (!dst) throw VmmError(ErrorCode::kKernelImage, "initrd " + config_.initrd_path + " does not fit in guest RAM");
    initrd.ReadRange(0, dst, initrd.size());
  }

  cmdline_ = config_.cmdline + cmdline_extra_;
  uint64_t limit = std::min<uint64_t>(kernel.cmdline_size_max, x86::kCmdlineMax - 1);
  if (cmdline_.size() > limit)
    throw VmmError(ErrorCode::kInvalidArgument, "kernel command line is " + std::to_string(cmdline_.size()) +
                                                    " bytes, the kernel accepts at most " + std::to_string(limit));
  memory_->Write(x86::kCmdlineAddr, cmdline_.c_str(), cmdline_.size() + 1);
  params.cmdline_len = static_cast<uint32_t>(cmdline_.size() + 1);
  params.e820 = x86::BuildE820(memory_->regions());
  params.acpi_rsdp_addr = x86::kAcpiTablesAddr;
  std::vector<uint8_t> zero_page = x86::BuildZeroPage(params);
  memory_->Write(x86::kZeroPageAddr, zero_page.data(), zero_page.size());

  std::vector<uint8_t> mptable = x86::BuildMpTable(config_.vcpus, x86::kEbdaAddr);
  memory_->Write(x86::kEbdaAddr, mptable.data(), mptable.size());
  std::vector<uint8_t> acpi = x86::BuildAcpiTables(x86::kAcpiTablesAddr, config_.vcpus);
  memory_->Write(x86::kAcpiTablesAddr, acpi.data(), acpi.size());
  x86::WriteLongModeTables(*memory_);
}

void Vm::CreateVcpus() {
  // The vCPUs themselves come with the shell; this gives them their boot state.
  std::vector<kvm_cpuid_entry2> supported = x86::SupportedCpuid(kvm_.get());
  for (uint32_t i = 0; i < config_.vcpus; i++) {
    Vcpu* v = vcpus_[i].get();
    x86::SetCpuid(v->fd.get(), x86::FilterCpuid(supported, i, config_.vcpus));
    x86::SetupBootMsrs(v->fd.get());
    x86::SetupFpu(v->fd.get());
    x86::SetupLapic(v->fd.get());
    if (i == 0) {
      x86::SetupLongModeSregs(v->fd.get());
      x86::SetupBootRegisters(v->fd.get(), entry_point_, x86::kZeroPageAddr);
    }
  }
}

void Vm::Start(bool paused) {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) throw VmmError(ErrorCode::kState, "VM already started");
  if (awaiting_state_) throw VmmError(ErrorCode::kState, "the arriving VM's final state has not been loaded");
  if (running_threads_ == 0) StartVcpuThreads();
  exit_stats_.MarkStarted();
  started_ = true;
  pause_requested_ = paused;
  resume_cv_.notify_all();
}

void Vm::StartVcpuThreads() {
  InstallKickHandler();
  running_threads_ = static_cast<uint32_t>(vcpus_.size());
  for (auto& v : vcpus_) {
    Vcpu* vcpu = v.get();
    vcpu->thread = StartVmmThread("vcpu" + std::to_string(vcpu->index), ThreadRole::kVcpu, [this, vcpu] { VcpuLoop(*vcpu); });
  }
}

void Vm::KickAll() {
  for (auto& v : vcpus_) {
    // immediate_exit covers the window before the thread enters KVM_RUN; the signal covers
    // a thread already inside it.
    __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (v->thread.joinable()) pthread_kill(v->thread.native_handle(), KickSignal());
  }
}

void Vm::RequestPause() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!started_ || finished_) throw VmmError(ErrorCode::kState, "VM is not running");
  pause_requested_ = true;
  KickAll();
}

void Vm::Resume() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!started_ || finished_) throw VmmError(ErrorCode::kState, "VM is not running");
  if (!template_dir_.empty())
    throw VmmError(ErrorCode::kState, "VM is the template saved in " + template_dir_ +
                                          " (its RAM is the template's memory file): it cannot run again");
  if (paused_) devices_->UnquiesceVirtio();
  paused_ = false;
  pause_requested_ = false;
  resume_cv_.notify_all();
}

void Vm::Stop() {
  SetThrottle(0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (exit_reason_ == ExitReason::kNone) exit_reason_ = ExitReason::kStopped, exit_detail_ = "stopped by the host";
    stop_ = true;
    resume_cv_.notify_all();
    if (started_) KickAll();  // threads not yet started wait on resume_cv_, and see stop_
  }
  for (auto& v : vcpus_)
    if (v->thread.joinable()) v->thread.join();
}

ExitStatsReport Vm::Stats(size_t top_n) {
  std::vector<int> stats_fds;
  for (const auto& v : vcpus_) stats_fds.push_back(v->stats.get());
  ExitStatsReport report = exit_stats_.Report(top_n, stats_fds);
  // Only parked vCPUs: reading a running one's registers waits for its next exit, which a guest
  // looping inside KVM (a fault it keeps taking) never makes.
  std::lock_guard<std::mutex> lock(mu_);
  if (!paused_) return report;
  for (const auto& v : vcpus_) {
    std::string text = "vCPU " + std::to_string(v->index) + ": ";
    kvm_regs regs{};
    kvm_sregs sregs{};
    if (!x86::ReadVcpuRegisters(v->fd.get(), &regs, &sregs)) {
      report.paused_vcpus.push_back(text + "registers unreadable");
      continue;
    }
    text += x86::DescribeParkedVcpu(v->fd.get(), regs, sregs);
    // The instruction bytes at RIP, through the guest's own page tables.
    kvm_translation tr{};
    tr.linear_address = regs.rip;
    if (ioctl(v->fd.get(), KVM_TRANSLATE, &tr) == 0 && tr.valid) {
      uint8_t code[16];
      text += "; rip -> gpa " + Hex(tr.physical_address);
      if (const uint8_t* at = memory_->Translate(tr.physical_address, sizeof code)) {
        std::memcpy(code, at, sizeof code);
        text += ", code";
        for (uint8_t b : code) {
          char byte[4];
          snprintf(byte, sizeof byte, " %02x", b);
          text += byte;
        }
      }
    } else {
      text += "; rip has no guest-physical translation";
    }
    report.paused_vcpus.push_back(text);
  }
  return report;
}

void Vm::SendConsoleInput(const uint8_t* data, size_t len) { serial_->QueueInput(data, len); }

void Vm::InjectNmi() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!started_ || finished_) throw VmmError(ErrorCode::kState, "VM is not running");
  // KVM_NMI is a vCPU ioctl, which waits for the vCPU's KVM_RUN to return: each vCPU thread
  // issues it itself, after the kick.
  for (auto& v : vcpus_) v->nmi_pending = true;
  KickAll();
}

void Vm::Finish(ExitReason reason, const std::string& detail) {
  std::lock_guard<std::mutex> lock(mu_);
  if (exit_reason_ == ExitReason::kNone) exit_reason_ = reason, exit_detail_ = detail;
  stop_ = true;
  resume_cv_.notify_all();
  KickAll();
}

void Vm::VcpuLoop(Vcpu& vcpu) {
  // The kick signal must be deliverable on this thread.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, KickSignal());
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  {
    // An arriving VM's threads are made ahead of its start (thread creation is off the downtime).
    std::unique_lock<std::mutex> lock(mu_);
    resume_cv_.wait(lock, [&] { return started_ || stop_; });
    if (!started_) {
      --running_threads_;  // stopped before it ever ran: no exit to report
      return;
    }
  }

  for (;;) {
    // Clear before checking the flags: a kick that lands after the check still stops KVM_RUN.
    __atomic_store_n(&vcpu.run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    if (stop_) break;
    // Queued in KVM before a pause, so a snapshot taken now carries it (KVM_GET_VCPU_EVENTS).
    if (vcpu.nmi_pending.exchange(false) && ioctl(vcpu.fd.get(), KVM_NMI) < 0) {
      Finish(ExitReason::kVmmError, WithErrno("KVM_NMI on vCPU " + std::to_string(vcpu.index)));
      break;
    }
    if (pause_requested_) {
      // After an I/O or MMIO-read exit the instruction completes only inside the next KVM_RUN;
      // one with immediate_exit set finishes it and returns at once (EINTR), so the state a
      // snapshot reads is consistent.
      __atomic_store_n(&vcpu.run->immediate_exit, 1, __ATOMIC_SEQ_CST);
      if (ioctl(vcpu.fd.get(), KVM_RUN, 0) == 0) {
        // Completing it exited again (the next element of a string I/O): handle, then retry.
        try {
          if (HandleExit(vcpu)) continue;
        } catch (const std::exception& e) {
          Finish(ExitReason::kVmmError, std::string("vCPU ") + std::to_string(vcpu.index) + ": " + e.what());
        }
        break;
      }
      if (errno != EINTR && errno != EAGAIN) {
        Finish(ExitReason::kVmmError, WithErrno("completing vCPU " + std::to_string(vcpu.index) + "'s last exit before pausing"));
        break;
      }
      std::unique_lock<std::mutex> lock(mu_);
      if (++parked_ == vcpus_.size() && pause_requested_ && !stop_) {
        devices_->QuiesceVirtio();  // nothing writes guest RAM while paused
        paused_ = true;
        paused_cv_.notify_all();
        if (callbacks_.paused) callbacks_.paused();
      }
      resume_cv_.wait(lock, [&] { return !pause_requested_ || stop_; });
      parked_--;
      continue;
    }
    if (ioctl(vcpu.fd.get(), KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        if (throttle_percent_.load(std::memory_order_relaxed)) ThrottleSleep();
        continue;
      }
      Finish(ExitReason::kVmmError, WithErrno("KVM_RUN on vCPU " + std::to_string(vcpu.index)));
      break;
    }
    exit_stats_.RecordExit(*vcpu.run);
    try {
      if (!HandleExit(vcpu)) break;
    } catch (const std::exception& e) {
      Finish(ExitReason::kVmmError, std::string("vCPU ") + std::to_string(vcpu.index) + ": " + e.what());
      break;
    }
  }

  std::unique_lock<std::mutex> lock(mu_);
  if (--running_threads_ == 0) {
    finished_ = true;
    paused_cv_.notify_all();
    ExitReason reason = exit_reason_;
    std::string detail = exit_detail_;
    lock.unlock();
    if (callbacks_.exited) callbacks_.exited(reason, detail);
  }
}

bool Vm::HandleExit(Vcpu& vcpu) {
  kvm_run* run = vcpu.run;
  vcpu.trace.Record(*run, (run->kvm_valid_regs & KVM_SYNC_X86_REGS) ? run->s.regs.regs.rip : 0);
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
        if (run->io.direction == KVM_EXIT_IO_OUT) {
          pio_bus_.Write(run->io.port, data, run->io.size);
        } else if (!pio_bus_.Read(run->io.port, data, run->io.size)) {
          std::memset(data, 0xff, run->io.size);  // nothing there: floating bus
        }
      }
      return true;
    }
    case KVM_EXIT_MMIO:
      if (run->mmio.is_write) {
        mmio_bus_.Write(run->mmio.phys_addr, run->mmio.data, run->mmio.len);
      } else if (!mmio_bus_.Read(run->mmio.phys_addr, run->mmio.data, run->mmio.len)) {
        std::memset(run->mmio.data, 0xff, run->mmio.len);
      }
      return true;
    case KVM_EXIT_SHUTDOWN:
      Finish(ExitReason::kTripleFault, "vCPU " + std::to_string(vcpu.index) + " triple-faulted (KVM_EXIT_SHUTDOWN)" +
                                           x86::DumpVcpu(vcpu.fd.get(), vcpu.trace));
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      Finish(run->system_event.type == KVM_SYSTEM_EVENT_RESET ? ExitReason::kReboot : ExitReason::kPoweroff,
             "system event " + std::to_string(run->system_event.type));
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string detail = "KVM internal error on vCPU " + std::to_string(vcpu.index) + ", suberror " +
                           std::to_string(run->internal.suberror) + ", data";
      for (uint32_t i = 0; i < run->internal.ndata && i < 16; i++) {
        char word[24];
        snprintf(word, sizeof word, " 0x%llx", static_cast<unsigned long long>(run->internal.data[i]));
        detail += word;
      }
      Finish(ExitReason::kInternalError, detail + x86::DumpVcpu(vcpu.fd.get(), vcpu.trace));
      return false;
    }
    case KVM_EXIT_FAIL_ENTRY:
      Finish(ExitReason::kFailEntry, "VM entry failed on vCPU " + std::to_string(vcpu.index) + ", reason " +
                                         Hex(run->fail_entry.hardware_entry_failure_reason) +
                                         x86::DumpVcpu(vcpu.fd.get(), vcpu.trace));
      return false;
    case KVM_EXIT_INTR:
      return true;
    default:
      Finish(ExitReason::kVmmError, "unhandled KVM exit reason " + std::to_string(run->exit_reason) + " on vCPU " +
                                        std::to_string(vcpu.index));
      return false;
  }
}

}  // namespace stencil
