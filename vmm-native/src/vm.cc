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
#include "virtio/p9/device.h"
#include "virtio/rng.h"
#include "virtio/vsock/device.h"

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

constexpr uint32_t kMaxVcpus = 254;  // MP table / xAPIC ID limit

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

void Ioctl(int fd, unsigned long req, unsigned long arg, const char* what) {
  if (ioctl(fd, req, arg) < 0) throw VmmError(ErrorCode::kKvm, WithErrno(what));
}

}  // namespace

Vm::Vm(const VmConfig& config, VmCallbacks callbacks) : config_(config), callbacks_(std::move(callbacks)) {
  if (config_.vcpus == 0) throw VmmError(ErrorCode::kInvalidArgument, "vCPU count must be at least 1");
  if (config_.vcpus > kMaxVcpus)
    throw VmmError(ErrorCode::kInvalidArgument,
                   "vCPU count " + std::to_string(config_.vcpus) + " exceeds the maximum of " + std::to_string(kMaxVcpus));
  if (config_.kernel_path.empty()) throw VmmError(ErrorCode::kInvalidArgument, "no kernel image given");
  exit_stats_.TimePhase("create-vm", [&] { CreateVm(); });
  exit_stats_.TimePhase("guest-memory", [&] {
    memory_ = std::make_unique<GuestMemory>(config_.memory);
    SetupMemorySlots();
  });
  exit_stats_.TimePhase("devices", [&] { SetupDevices(); });
  exit_stats_.TimePhase("load-guest", [&] { LoadGuest(); });
  exit_stats_.TimePhase("vcpus", [&] { CreateVcpus(); });
}

Vm::~Vm() {
  Stop();
  // Device worker threads may still raise interrupts: stop them (by destroying the devices)
  // before the IRQ lines, which are declared after the bus and so would be destroyed first.
  mmio_bus_ = Bus();
  for (auto& v : vcpus_)
    if (v->run) munmap(v->run, run_mmap_size_);
}

void Vm::CreateVm() {
  kvm_ = OpenKvm();
  const std::pair<long, const char*> required[] = {
      {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},          {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"}, {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
      {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
  };
  for (auto& [cap, name] : required)
    if (CheckExtension(kvm_.get(), cap) <= 0)
      throw VmmError(ErrorCode::kKvmUnavailable, std::string("this KVM lacks ") + name);
  int max_vcpus = CheckExtension(kvm_.get(), KVM_CAP_MAX_VCPUS);
  if (max_vcpus > 0 && config_.vcpus > static_cast<uint32_t>(max_vcpus))
    throw VmmError(ErrorCode::kInvalidArgument, "vCPU count " + std::to_string(config_.vcpus) +
                                                    " exceeds this host's KVM limit of " + std::to_string(max_vcpus));
  vm_.reset(ioctl(kvm_.get(), KVM_CREATE_VM, 0));
  if (!vm_.valid()) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_VM"));
  run_mmap_size_ = ioctl(kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_mmap_size_ <= 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_GET_VCPU_MMAP_SIZE"));
  Ioctl(vm_.get(), KVM_SET_TSS_ADDR, x86::kTssAddr, "KVM_SET_TSS_ADDR");
  uint64_t identity = x86::kIdentityMapAddr;
  if (ioctl(vm_.get(), KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
    throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_IDENTITY_MAP_ADDR"));
  Ioctl(vm_.get(), KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  if (ioctl(vm_.get(), KVM_CREATE_PIT2, &pit) < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_PIT2"));
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
  irqs_.push_back(std::make_unique<IrqLine>(vm_.get(), x86::kSerialIrq));
  serial_ = std::make_shared<Serial>(irqs_.back().get(), [this](const uint8_t* d, size_t n) {
    exit_stats_.RecordConsoleOutput();
    if (callbacks_.console) callbacks_.console(d, n);
  });
  pio_bus_.Register(0x3f8, 8, serial_);
  pio_bus_.Register(0x60, 5, std::make_shared<I8042>([this] { Finish(ExitReason::kReboot, "guest reset via i8042"); }));
  pio_bus_.Register(x86::kPm1EventPort, x86::kPmPortsSize, std::make_shared<AcpiPm>([this] {
                      Finish(ExitReason::kPoweroff, "guest entered ACPI S5");
                    }));

  std::vector<std::unique_ptr<VirtioDevice>> virtio;
  if (config_.virtio_rng) virtio.push_back(std::make_unique<VirtioRng>());
  if (config_.vsock.guest_cid != 0) {
    vsock::MuxerOptions options;
    options.uds_path = config_.vsock.uds_path;
    virtio.push_back(std::make_unique<VirtioVsock>(config_.vsock.guest_cid, options));
  }
  // Declared in configuration order, so the guest names them vda, vdb, ... in that order.
  for (const auto& disk : config_.disks) virtio.push_back(std::make_unique<VirtioBlk>(disk));
  for (size_t i = 0; i < config_.shares.size(); i++) {
    const SharedDirectory& share = config_.shares[i];
    for (size_t j = 0; j < i; j++)
      if (config_.shares[j].tag == share.tag)
        throw VmmError(ErrorCode::kInvalidArgument, "shared directory tag '" + share.tag + "' is used twice");
    virtio.push_back(std::make_unique<VirtioP9>(share.tag, share.host_path, share.read_only));
  }
  uint32_t irq = x86::kFirstVirtioIrq;
  uint64_t base = x86::kVirtioMmioBase;
  for (auto& dev : virtio) {
    if (irq > x86::kMaxIrq) throw VmmError(ErrorCode::kInvalidArgument, "too many virtio devices for the IOAPIC");
    irqs_.push_back(std::make_unique<IrqLine>(vm_.get(), irq));
    mmio_bus_.Register(base, x86::kVirtioMmioSize,
                       std::make_shared<VirtioMmio>(std::move(dev), *memory_, irqs_.back().get()));
    cmdline_extra_ += " " + VirtioMmio::CmdlineEntry(base, irq);
    base += x86::kVirtioMmioSize;
    irq++;
  }
}

void Vm::LoadGuest() {
  ImageFile image(config_.kernel_path, "kernel image");
  KernelImage kernel = ParseKernelImage(image.Reader(), config_.kernel_path);
  for (const auto& seg : kernel.segments) {
    uint8_t* dst = memory_->Translate(seg.guest_addr, seg.mem_size);
    if (!dst)
      throw VmmError(ErrorCode::kKernelImage, "kernel " + config_.kernel_path + " needs guest memory up to 0x" +
                                                  std::to_string(seg.guest_addr + seg.mem_size) +
                                                  ", beyond this VM's RAM");
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
  std::vector<kvm_cpuid_entry2> supported = x86::SupportedCpuid(kvm_.get());
  for (uint32_t i = 0; i < config_.vcpus; i++) {
    auto v = std::make_unique<Vcpu>();
    v->index = i;
    v->fd.reset(ioctl(vm_.get(), KVM_CREATE_VCPU, i));
    if (!v->fd.valid()) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_VCPU " + std::to_string(i)));
    void* run = mmap(nullptr, run_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd.get(), 0);
    if (run == MAP_FAILED) throw VmmError(ErrorCode::kKvm, WithErrno("mmap kvm_run of vCPU " + std::to_string(i)));
    v->run = static_cast<kvm_run*>(run);
    x86::SetCpuid(v->fd.get(), x86::FilterCpuid(supported, i, config_.vcpus));
    x86::SetupBootMsrs(v->fd.get());
    x86::SetupFpu(v->fd.get());
    x86::SetupLapic(v->fd.get());
    if (i == 0) {
      x86::SetupLongModeSregs(v->fd.get());
      x86::SetupBootRegisters(v->fd.get(), entry_point_, x86::kZeroPageAddr);
    }
    vcpus_.push_back(std::move(v));
  }
}

void Vm::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) throw VmmError(ErrorCode::kState, "VM already started");
  InstallKickHandler();
  exit_stats_.MarkStarted();
  started_ = true;
  running_threads_ = static_cast<uint32_t>(vcpus_.size());
  for (auto& v : vcpus_) {
    Vcpu* vcpu = v.get();
    vcpu->thread = std::thread([this, vcpu] { VcpuLoop(*vcpu); });
    char name[16];
    snprintf(name, sizeof name, "vcpu%u", vcpu->index);
    pthread_setname_np(vcpu->thread.native_handle(), name);
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
  pause_requested_ = false;
  resume_cv_.notify_all();
}

void Vm::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (exit_reason_ == ExitReason::kNone) exit_reason_ = ExitReason::kStopped, exit_detail_ = "stopped by the host";
    stop_ = true;
    resume_cv_.notify_all();
    if (started_) KickAll();
  }
  for (auto& v : vcpus_)
    if (v->thread.joinable()) v->thread.join();
}

ExitStatsReport Vm::Stats(size_t top_n) const {
  std::vector<int> vcpu_fds;
  for (const auto& v : vcpus_) vcpu_fds.push_back(v->fd.get());
  return exit_stats_.Report(top_n, vcpu_fds);
}

void Vm::SendConsoleInput(const uint8_t* data, size_t len) { serial_->QueueInput(data, len); }

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

  for (;;) {
    // Clear before checking the flags: a kick that lands after the check still stops KVM_RUN.
    __atomic_store_n(&vcpu.run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    if (stop_) break;
    if (pause_requested_) {
      std::unique_lock<std::mutex> lock(mu_);
      if (++parked_ == vcpus_.size() && callbacks_.paused) callbacks_.paused();
      resume_cv_.wait(lock, [&] { return !pause_requested_ || stop_; });
      parked_--;
      continue;
    }
    if (ioctl(vcpu.fd.get(), KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
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
    ExitReason reason = exit_reason_;
    std::string detail = exit_detail_;
    lock.unlock();
    if (callbacks_.exited) callbacks_.exited(reason, detail);
  }
}

bool Vm::HandleExit(Vcpu& vcpu) {
  kvm_run* run = vcpu.run;
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
      Finish(ExitReason::kTripleFault, "vCPU " + std::to_string(vcpu.index) + " triple-faulted (KVM_EXIT_SHUTDOWN)");
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      Finish(run->system_event.type == KVM_SYSTEM_EVENT_RESET ? ExitReason::kReboot : ExitReason::kPoweroff,
             "system event " + std::to_string(run->system_event.type));
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string detail = "KVM internal error on vCPU " + std::to_string(vcpu.index) + ", suberror " +
                           std::to_string(run->internal.suberror);
      kvm_regs regs{};
      if (ioctl(vcpu.fd.get(), KVM_GET_REGS, &regs) == 0) {
        char buf[64];
        snprintf(buf, sizeof buf, " at rip=0x%llx", static_cast<unsigned long long>(regs.rip));
        detail += buf;
      }
      Finish(ExitReason::kInternalError, detail);
      return false;
    }
    case KVM_EXIT_FAIL_ENTRY:
      Finish(ExitReason::kFailEntry, "VM entry failed on vCPU " + std::to_string(vcpu.index) + ", reason 0x" +
                                         std::to_string(run->fail_entry.hardware_entry_failure_reason));
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
