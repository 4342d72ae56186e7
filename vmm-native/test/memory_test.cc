// Guest RAM mappings: children of the VMM's process never inherit them, and its core dumps never
// hold them (shared or private).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "../src/memory.h"

using namespace stencil;

namespace {

// The VmFlags line of the /proc/self/smaps entry that starts at `base`.
std::string VmFlagsOf(const uint8_t* base) {
  char start[32];
  snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(base));
  std::ifstream smaps("/proc/self/smaps");
  bool in_entry = false;
  for (std::string line; std::getline(smaps, line);) {
    if (line.rfind(start, 0) == 0) in_entry = true;
    if (in_entry && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

TEST(GuestMemoryMapping, IsNotInheritedByForkedChildrenNorDumped) {
  char tmpl[] = "/dev/shm/stencil-memory-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  {
    MemoryOptions o;
    o.size = 16ULL << 20;
    o.directory = tmpl;
    o.name = "ram";
    GuestMemory shared(o);
    EXPECT_NE(VmFlagsOf(shared.base()).find(" dc"), std::string::npos) << VmFlagsOf(shared.base());
    EXPECT_NE(VmFlagsOf(shared.base()).find(" dd"), std::string::npos) << VmFlagsOf(shared.base());

    o.keep_file = true;
    o.name = "template";
    { GuestMemory make_file(o); }
    o.keep_file = false;
    o.sharing = MemorySharing::kPrivateCopyOnWrite;
    GuestMemory clone(o);
    EXPECT_NE(VmFlagsOf(clone.base()).find(" dc"), std::string::npos) << VmFlagsOf(clone.base());
    EXPECT_NE(VmFlagsOf(clone.base()).find(" dd"), std::string::npos) << VmFlagsOf(clone.base());
  }
  std::filesystem::remove_all(tmpl);
}

}  // namespace
