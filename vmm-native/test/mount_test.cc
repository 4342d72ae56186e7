// The shim's mount(2)/umount2(2) calls: a tmpfs, a bind of it, a read-only remount of the bind,
// a lazy unmount; unknown flags and failing calls are errors that say what was asked.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "../src/error.h"
#include "../src/host/mount.h"

using namespace stencil;

namespace {

class HostMount : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mount(2) needs root";
    char tmpl[] = "/tmp/stencil-mount-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::filesystem::create_directory(dir_ + "/fs");
    std::filesystem::create_directory(dir_ + "/view");
  }
  void TearDown() override {
    if (dir_.empty()) return;
    umount2((dir_ + "/view").c_str(), MNT_DETACH);
    umount2((dir_ + "/fs").c_str(), MNT_DETACH);
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(HostMount, MountsBindsRemountsReadOnlyAndUnmounts) {
  Mount({"stencil-test", dir_ + "/fs", "tmpfs", {"nosuid", "nodev"}, "size=1m,mode=0755"});
  std::ofstream(dir_ + "/fs/file") << "x";
  Mount({dir_ + "/fs", dir_ + "/view", "", {"bind"}, ""});
  Mount({"", dir_ + "/view", "", {"private"}, ""});
  Mount({"", dir_ + "/view", "", {"remount", "bind", "ro"}, ""});
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/view/file"));
  EXPECT_NE(access((dir_ + "/view/file").c_str(), W_OK), 0) << "the read-only view is writable";
  EXPECT_EQ(access((dir_ + "/fs/file").c_str(), W_OK), 0) << "the source became read-only too";
  Unmount(dir_ + "/view", {});
  Unmount(dir_ + "/fs", {"detach"});
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/fs/file"));
}

TEST_F(HostMount, TakesContainerdsFlagsByName) {
  Mount({"stencil-test", dir_ + "/fs", "tmpfs", {"noatime", "nodiratime", "dirsync", "noexec"}, "size=1m"});
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(mountinfo, line)) {
    if (line.find(" " + dir_ + "/fs ") != std::string::npos) found = line;
  }
  EXPECT_NE(found.find("noexec"), std::string::npos) << found;
  EXPECT_NE(found.find("noatime"), std::string::npos) << found;
  EXPECT_NE(found.find("nodiratime"), std::string::npos) << found;
  Mount({"", dir_ + "/fs", "", {"unbindable"}, ""});
  EXPECT_THROW(Mount({dir_ + "/fs", dir_ + "/view", "", {"bind"}, ""}), VmmError) << "an unbindable mount was bound";
  Unmount(dir_ + "/fs", {});
}

TEST_F(HostMount, ErrorsNameTheCallAndTheReason) {
  try {
    Mount({"", dir_ + "/fs", "", {"bind", "sideways"}, ""});
    FAIL() << "an unknown flag was accepted";
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("unknown flag 'sideways'"), std::string::npos) << e.what();
  }
  try {
    Unmount(dir_ + "/fs", {});
    FAIL() << "unmounting a plain directory succeeded";
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kHostCall);
    EXPECT_NE(std::string(e.what()).find("umount " + dir_ + "/fs: Invalid argument"), std::string::npos) << e.what();
  }
  try {
    Mount({dir_ + "/missing", dir_ + "/view", "", {"bind"}, ""});
    FAIL() << "a bind of a missing directory succeeded";
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
}

}  // namespace
