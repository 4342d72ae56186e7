// VMM-level restore on this host's /dev/kvm, side by side with the floor any restore pays
// (shared/tools/restore-floor.c): one JSON line on stdout.
//
// Template: the counting CPL3 guest (test/counter_guest.h) in 256 MiB of tmpfs RAM, every page
// touched, paused and saved. Each restore run: read and check the snapshot, map its memory
// copy-on-write, rebuild devices, load VM/vCPU/device state, start, and wait for the guest's
// first instruction (its counter moves). "shell ahead" takes a VmShell (VM + irqchip + PIT +
// vCPU + RAM slot registered) created before the clock starts, as a warm pool would; "cold"
// creates it inside.
// The floors: create VM, map the same file MAP_PRIVATE, one vCPU, 64-bit sregs/regs, run to the
// first exit - without and with the in-kernel irqchip + PIT.
#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "../src/arch/x86/cpu_setup.h"
#include "../src/arch/x86/layout.h"
#include "../src/error.h"
#include "../src/kvm.h"
#include "../src/snapshot/snapshot.h"
#include "../src/vm.h"
#include "../test/counter_guest.h"

using namespace stencil;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kMemory = 256ULL << 20;

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

volatile uint64_t* CounterIn(const Vm& vm) {
  return reinterpret_cast<volatile uint64_t*>(vm.memory().Translate(stencil::testing::kCounterAddr, 8));
}

// Boots the counting guest, lets it count, pauses it, touches every page above its code (a
// realistic, fully populated template) and saves it into `dir`. Returns the saved counter.
uint64_t MakeTemplate(const std::string& dir, const std::string& kernel) {
  std::mutex mu;
  std::condition_variable cv;
  bool paused = false;
  VmCallbacks cb;
  cb.paused = [&] {
    std::lock_guard<std::mutex> lock(mu);
    paused = true;
    cv.notify_all();
  };
  VmConfig config;
  config.vcpus = 1;
  config.memory.size = kMemory;
  config.memory.directory = dir;
  config.memory.name = kSnapshotMemoryFile;
  config.kernel_path = kernel;
  Vm vm(config, cb);
  vm.Start();
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (*CounterIn(vm) < 1000000 && Clock::now() < deadline) usleep(1000);
  if (*CounterIn(vm) == 0) throw VmmError(ErrorCode::kState, "the template guest never ran");
  vm.RequestPause();
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return paused; });
  lock.unlock();
  uint8_t* ram = vm.memory().Translate(0, kMemory);
  for (uint64_t off = 4ULL << 20; off < kMemory; off += 4096) ram[off] = static_cast<uint8_t>(off >> 12);
  uint64_t saved = *CounterIn(vm);
  vm.SaveSnapshot(dir);
  return saved;
}

// Phases of one restore, in ms: reading/checking the snapshot, building the VM (memory, devices,
// state), and from Start to the guest's first instruction.
struct RestoreTimes {
  double read, build, first_instruction, total;
};

RestoreTimes RestoreOnce(const std::string& dir, uint64_t saved, bool shell_ahead) {
  VmShell shell;
  if (shell_ahead) shell = VmShell::Create(1, kMemory);
  auto t0 = Clock::now();
  Snapshot snapshot = ReadSnapshot(dir);
  auto t1 = Clock::now();
  if (!shell_ahead) shell = VmShell::Create(1, snapshot.config.vm.memory.size);
  RestoreOptions options;
  options.snapshot_dir = dir;
  Vm vm(std::move(shell), snapshot, options, {});
  auto t2 = Clock::now();
  vm.Start();
  volatile uint64_t* counter = CounterIn(vm);
  auto deadline = t0 + std::chrono::seconds(5);
  while (*counter == saved) {
    if (Clock::now() > deadline) throw VmmError(ErrorCode::kState, "the restored guest did not run within 5 s");
    usleep(20);  // leave the core to the vCPU thread on a busy host (costs at most ~0.1 ms of resolution)
  }
  auto t3 = Clock::now();
  vm.Stop();
  return {Ms(t0, t1), Ms(t1, t2), Ms(t2, t3), Ms(t0, t3)};
}

double FloorOnce(const std::string& memory_path, bool irqchip) {
  auto t0 = Clock::now();
  VmShell bare;
  bare.kvm = OpenKvm();
  bare.vm.reset(ioctl(bare.kvm.get(), KVM_CREATE_VM, 0));
  if (!bare.vm.valid()) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_VM"));
  if (irqchip) {
    if (ioctl(bare.vm.get(), KVM_CREATE_IRQCHIP, 0) < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_IRQCHIP"));
    kvm_pit_config pit{};
    if (ioctl(bare.vm.get(), KVM_CREATE_PIT2, &pit) < 0) throw VmmError(ErrorCode::kKvm, WithErrno("KVM_CREATE_PIT2"));
  }
  UniqueFd fd(open(memory_path.c_str(), O_RDONLY | O_CLOEXEC));
  void* mem = mmap(nullptr, kMemory, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd.get(), 0);
  if (mem == MAP_FAILED) throw VmmError(ErrorCode::kMemoryBacking, WithErrno("mmap"));
  kvm_userspace_memory_region slot{0, 0, 0, kMemory, reinterpret_cast<uint64_t>(mem)};
  if (ioctl(bare.vm.get(), KVM_SET_USER_MEMORY_REGION, &slot) < 0)
    throw VmmError(ErrorCode::kKvm, WithErrno("KVM_SET_USER_MEMORY_REGION"));
  UniqueFd vcpu(ioctl(bare.vm.get(), KVM_CREATE_VCPU, 0));
  int run_size = ioctl(bare.kvm.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  auto* run = static_cast<kvm_run*>(mmap(nullptr, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu.get(), 0));
  x86::SetupLongModeSregs(vcpu.get());
  x86::SetupBootRegisters(vcpu.get(), 0x100000 + 0x1000, 0);  // an `out` placed below
  int rc = ioctl(vcpu.get(), KVM_RUN, 0);
  auto t1 = Clock::now();
  if (rc < 0 || run->exit_reason != KVM_EXIT_IO)
    throw VmmError(ErrorCode::kKvm, "floor guest did not exit with an out (exit " + std::to_string(run->exit_reason) + ")");
  munmap(run, run_size);
  munmap(mem, kMemory);
  return Ms(t0, t1);
}

struct Stats {
  double median, min, max;
};
Stats Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  int runs = argc > 1 ? std::max(20, atoi(argv[1])) : 30;
  char tmpl[] = "/dev/shm/stencil-restore-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return perror("mkdtemp"), 1;
  std::string dir = tmpl;
  try {
    std::string kernel = dir + "/guest.elf";
    stencil::testing::WriteCounterGuest(kernel);
    uint64_t saved = MakeTemplate(dir, kernel);
    {
      // The floor guest's code: `out 0x80, al; hlt` in a page the template does not use, written
      // into the template file itself so both measurements map the same file.
      UniqueFd fd(open((dir + "/memory").c_str(), O_RDWR | O_CLOEXEC));
      const uint8_t code[] = {0xe6, 0x80, 0xf4};
      if (pwrite(fd.get(), code, sizeof code, 0x101000) != sizeof code) throw VmmError(ErrorCode::kState, "writing floor code");
    }
    std::vector<double> ahead, read, build, first, cold, floor, floor_irqchip;
    RestoreOnce(dir, saved, true);  // warm-up: page cache, code paths
    for (int i = 0; i < runs; i++) {  // interleaved, so drift hits every figure alike
      RestoreTimes t = RestoreOnce(dir, saved, true);
      ahead.push_back(t.total);
      read.push_back(t.read);
      build.push_back(t.build);
      first.push_back(t.first_instruction);
      cold.push_back(RestoreOnce(dir, saved, false).total);
      floor.push_back(FloorOnce(dir + "/memory", false));
      floor_irqchip.push_back(FloorOnce(dir + "/memory", true));
    }
    Stats a = Summarize(ahead), c = Summarize(cold), f = Summarize(floor), fi = Summarize(floor_irqchip);
    printf("{\"figure\":\"vmm_restore\",\"mib\":%llu,\"runs\":%d,"
           "\"restore_shell_ahead_ms_median\":%.3f,\"restore_shell_ahead_ms_min\":%.3f,\"restore_shell_ahead_ms_max\":%.3f,"
           "\"phase_read_ms_median\":%.3f,\"phase_build_ms_median\":%.3f,\"phase_first_instruction_ms_median\":%.3f,"
           "\"restore_cold_ms_median\":%.3f,\"floor_ms_median\":%.3f,\"floor_irqchip_ms_median\":%.3f,"
           "\"ratio_to_floor\":%.2f,\"goal_ms\":3,\"meets_goal\":%s}\n",
           static_cast<unsigned long long>(kMemory >> 20), runs, a.median, a.min, a.max, Summarize(read).median,
           Summarize(build).median, Summarize(first).median, c.median, f.median, fi.median,
           a.median / f.median, a.median <= 3 ? "true" : "false");
  } catch (const std::exception& e) {
    fprintf(stderr, "restore-bench: %s\n", e.what());
    std::filesystem::remove_all(dir);
    return 1;
  }
  std::filesystem::remove_all(dir);
  return 0;
}
