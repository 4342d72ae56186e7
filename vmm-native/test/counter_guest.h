// A tiny guest for snapshot tests and the restore benchmark, as an ELF "kernel" the Vm boot path
// loads: a few CPL0 instructions make the first 4 MiB user-accessible, load a GDT with user
// segments and iretq to CPL3, where a loop increments a 64-bit counter in RAM forever (kvm_pvm
// emulates guest kernel mode but runs user mode natively). No exits, no interrupts (IF=0).
#pragma once
#include <elf.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <x86intrin.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "../src/error.h"
#include "../src/kvm.h"
#include "../src/vm_config.h"

namespace stencil::testing {

constexpr uint64_t kCounterAddr = 0x200000;
constexpr uint64_t kGuestLoadAddr = 0x100000;
// The pattern variant also stores each new count in page (count & 0xff) of this 1 MiB range, so
// it keeps 256 pages dirty and every page's value says which page it belongs in.
constexpr uint64_t kPatternAddr = 0x201000;
constexpr uint64_t kPatternPages = 256;

// Where the pattern variant writes, one page per count: `pages` (a power of two) pages from
// `base` (below 2 GiB). The default stays in the first 4 MiB, which the prologue makes
// user-accessible; a range beyond needs UserAccessPreamble.
struct PatternRange {
  uint64_t base = kPatternAddr;
  uint32_t pages = kPatternPages;
};

// CPL0 code for CounterGuestImage's preamble: makes guest memory up to `end` (2 MiB pages of the
// boot page tables) user-accessible, so the pattern can sweep a large range.
inline std::vector<uint8_t> UserAccessPreamble(uint64_t end) {
  uint32_t entries = static_cast<uint32_t>((end + (2ULL << 20) - 1) >> 21) - 2;  // PD entries 0-1: the prologue's
  std::vector<uint8_t> code = {
      0xb8, 0x10, 0xb0, 0x00, 0x00,  // mov eax, 0xb010        (the PD's third entry)
      0xb9, 0, 0, 0, 0,              // mov ecx, entries
      0x48, 0x83, 0x08, 0x04,        // 1: or qword [rax], 4   (user)
      0x48, 0x83, 0xc0, 0x08,        // add rax, 8
      0xe2, 0xf6,                    // loop 1b
  };
  std::memcpy(code.data() + 6, &entries, 4);
  return code;
}

// pace_cycles > 0 (with pattern): one count and pattern write per pace_cycles TSC cycles at most,
// so the guest dirties pages at a fixed rate that a throttled vCPU cannot keep up.
// preamble: CPL0 code run first (from offset 0x500, entered there), which then falls into the
// usual prologue and count: the hostile-guest tests poke the devices with it.
inline std::vector<uint8_t> CounterGuestImage(bool pattern = false, uint32_t pace_cycles = 0,
                                              const std::vector<uint8_t>& preamble = {}, PatternRange range = {}) {
  std::vector<uint8_t> seg(0x500, 0x90);
  if (!preamble.empty()) {
    seg.insert(seg.end(), preamble.begin(), preamble.end());
    int32_t back = -static_cast<int32_t>(seg.size() + 5);  // jmp rel32 to offset 0
    seg.push_back(0xe9);
    for (int i = 0; i < 4; i++) seg.push_back(static_cast<uint8_t>(static_cast<uint32_t>(back) >> (8 * i)));
  }
  const uint8_t prologue[] = {
      0xb8, 0x00, 0x90, 0x00, 0x00,  // mov eax, 0x9000        (PML4)
      0x48, 0x83, 0x08, 0x04,        // or qword [rax], 4      (user)
      0xb8, 0x00, 0xa0, 0x00, 0x00,  // mov eax, 0xa000        (PDPT)
      0x48, 0x83, 0x08, 0x04,        // or qword [rax], 4
      0xb8, 0x00, 0xb0, 0x00, 0x00,  // mov eax, 0xb000        (PD)
      0x48, 0x83, 0x08, 0x04,        // or qword [rax], 4      (0-2 MiB)
      0x48, 0x83, 0x48, 0x08, 0x04,  // or qword [rax+8], 4    (2-4 MiB)
      0x0f, 0x20, 0xd8,              // mov rax, cr3
      0x0f, 0x22, 0xd8,              // mov cr3, rax           (flush the TLB)
      0xb8, 0x40, 0x04, 0x10, 0x00,  // mov eax, gdt_pointer
      0x0f, 0x01, 0x10,              // lgdt [rax]
      0x6a, 0x23,                    // push 0x23              (ss: user data)
      0x68, 0x00, 0x00, 0x18, 0x00,  // push 0x180000          (rsp)
      0x68, 0x02, 0x30, 0x00, 0x00,  // push 0x3002            (rflags: IOPL 3, IF 0)
      0x6a, 0x2b,                    // push 0x2b              (cs: user code)
      0x68, 0x00, 0x02, 0x10, 0x00,  // push 0x100200          (rip)
      0x48, 0xcf,                    // iretq
  };
  const uint8_t user[] = {
      0xbb, 0x00, 0x00, 0x20, 0x00,  // mov ebx, kCounterAddr
      0x48, 0xff, 0x03,              // 1: inc qword [rbx]
      0xeb, 0xfb,                    // jmp 1b
  };
  const uint64_t gdt[] = {0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL, 0x00808b000000ffffULL,
                          0x00cff3000000ffffULL, 0x00affb000000ffffULL};
  uint8_t pattern_user[] = {
      0xbb, 0x00, 0x00, 0x20, 0x00,              // mov ebx, kCounterAddr
      0x48, 0xff, 0x03,                          // 1: inc qword [rbx]
      0x48, 0x8b, 0x03,                          // mov rax, [rbx]
      0x48, 0x89, 0xc1,                          // mov rcx, rax
      0x81, 0xe1, 0xff, 0x00, 0x00, 0x00,        // and ecx, 0xff
      0xc1, 0xe1, 0x0c,                          // shl ecx, 12
      0x48, 0x89, 0x81, 0x00, 0x10, 0x20, 0x00,  // mov [rcx + kPatternAddr], rax
      0xeb, 0xe5,                                // jmp 1b
  };
  uint8_t paced_user[] = {
      0xbb, 0x00, 0x00, 0x20, 0x00,              // mov ebx, kCounterAddr
      0x0f, 0x31,                                // 1: rdtsc
      0x48, 0xc1, 0xe2, 0x20,                    // shl rdx, 32
      0x48, 0x09, 0xd0,                          // or rax, rdx
      0x48, 0x3b, 0x43, 0x08,                    // cmp rax, [rbx + 8]   (the next write's TSC)
      0x72, 0xf1,                                // jb 1b
      0x48, 0x05, 0, 0, 0, 0,                    // add rax, pace_cycles
      0x48, 0x89, 0x43, 0x08,                    // mov [rbx + 8], rax
      0x48, 0xff, 0x03,                          // inc qword [rbx]
      0x48, 0x8b, 0x03,                          // mov rax, [rbx]
      0x48, 0x89, 0xc1,                          // mov rcx, rax
      0x81, 0xe1, 0xff, 0x00, 0x00, 0x00,        // and ecx, 0xff
      0xc1, 0xe1, 0x0c,                          // shl ecx, 12
      0x48, 0x89, 0x81, 0x00, 0x10, 0x20, 0x00,  // mov [rcx + kPatternAddr], rax
      0xeb, 0xcc,                                // jmp 1b
  };
  std::memcpy(paced_user + 22, &pace_cycles, 4);
  uint32_t mask = range.pages - 1;
  auto disp = static_cast<uint32_t>(range.base);
  std::memcpy(paced_user + 41, &mask, 4);
  std::memcpy(paced_user + 51, &disp, 4);
  std::memcpy(pattern_user + 16, &mask, 4);
  std::memcpy(pattern_user + 26, &disp, 4);
  std::memcpy(seg.data(), prologue, sizeof prologue);
  if (pattern && pace_cycles)
    std::memcpy(seg.data() + 0x200, paced_user, sizeof paced_user);
  else if (pattern)
    std::memcpy(seg.data() + 0x200, pattern_user, sizeof pattern_user);
  else
    std::memcpy(seg.data() + 0x200, user, sizeof user);
  std::memcpy(seg.data() + 0x400, gdt, sizeof gdt);
  uint16_t limit = sizeof gdt - 1;
  uint64_t base = kGuestLoadAddr + 0x400;
  std::memcpy(seg.data() + 0x440, &limit, 2);
  std::memcpy(seg.data() + 0x442, &base, 8);

  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = kGuestLoadAddr + (preamble.empty() ? 0 : 0x500);
  eh.e_phoff = sizeof eh;
  eh.e_ehsize = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  Elf64_Phdr ph{};
  ph.p_type = PT_LOAD;
  ph.p_flags = PF_R | PF_W | PF_X;
  ph.p_offset = 0x1000;
  ph.p_vaddr = ph.p_paddr = kGuestLoadAddr;
  ph.p_filesz = ph.p_memsz = seg.size();
  std::vector<uint8_t> file(0x1000 + seg.size(), 0);
  std::memcpy(file.data(), &eh, sizeof eh);
  std::memcpy(file.data() + sizeof eh, &ph, sizeof ph);
  std::memcpy(file.data() + 0x1000, seg.data(), seg.size());
  return file;
}

// This host's TSC rate (the guest's too: KVM runs it on the host's TSC), measured against the
// steady clock over 50 ms: what pace_cycles are counted in.
inline uint64_t MeasureTscHz() {
  auto t0 = std::chrono::steady_clock::now();
  uint64_t c0 = __rdtsc();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(50)) {
  }
  uint64_t c1 = __rdtsc();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<uint64_t>(static_cast<double>(c1 - c0) / s);
}

inline void WriteCounterGuest(const std::string& path, bool pattern = false, uint32_t pace_cycles = 0,
                              const std::vector<uint8_t>& preamble = {}, PatternRange range = {}) {
  std::vector<uint8_t> image = CounterGuestImage(pattern, pace_cycles, preamble, range);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(image.data()), image.size());
}

// A test on this machine's /dev/kvm (skipped without one) with a scratch directory on tmpfs
// holding the counter guest as `kernel_`.
class CounterGuestTest : public ::testing::Test {
 protected:
  CounterGuestTest(const char* name, bool pattern) : name_(name), pattern_(pattern) {}
  void SetUp() override {
    try {
      OpenKvm();
    } catch (const VmmError& e) {
      GTEST_SKIP() << e.what();
    }
    std::string tmpl = "/dev/shm/stencil-" + name_ + "-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    kernel_ = dir_ + "/guest.elf";
    WriteCounterGuest(kernel_, pattern_);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  // A VM of the counter guest with 64 MiB of RAM in dir_/ram_name.
  VmConfig CounterVmConfig(const std::string& ram_name, uint32_t vcpus = 1) const {
    VmConfig c;
    c.vcpus = vcpus;
    c.memory.size = 64ULL << 20;
    c.memory.directory = dir_;
    c.memory.name = ram_name;
    c.kernel_path = kernel_;
    return c;
  }
  std::string name_;
  bool pattern_;
  std::string dir_, kernel_;
};

}  // namespace stencil::testing
