// host/tap: taps in this namespace and in another one (a pod's, made here with `ip netns`).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "../src/error.h"
#include "../src/host/tap.h"

using namespace stencil;

namespace {

bool CanMakeTaps(std::string* why) {
  struct stat st;
  if (geteuid() != 0) return *why = "creating a tap interface needs root", false;
  if (stat("/dev/net/tun", &st) != 0) return *why = "no /dev/net/tun on this host", false;
  return true;
}

std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  return out;
}

}  // namespace

TEST(Tap, CreatesATapThatGoesAwayWhenClosed) {
  std::string why;
  if (!CanMakeTaps(&why)) GTEST_SKIP() << why;
  EXPECT_THROW(OpenTap({std::string(16, 'a')}), VmmError);
  EXPECT_THROW(OpenTap({""}), VmmError);
  std::string name = "stntest" + std::to_string(getpid() % 100000);
  std::string sys = "/sys/class/net/" + name;
  struct stat st;
  {
    UniqueFd tap = OpenTap({name, "", 1400});
    EXPECT_EQ(stat(sys.c_str(), &st), 0) << sys;
    int size = 0;
    ASSERT_EQ(ioctl(tap.get(), TUNGETVNETHDRSZ, &size), 0);
    EXPECT_EQ(size, 12);
    EXPECT_NE(fcntl(tap.get(), F_GETFL) & O_NONBLOCK, 0);
    EXPECT_NE(fcntl(tap.get(), F_GETFD) & FD_CLOEXEC, 0);
    std::ifstream mtu(sys + "/mtu");
    int m = 0;
    mtu >> m;
    EXPECT_EQ(m, 1400);
    std::ifstream flags(sys + "/flags");
    std::string f;
    flags >> f;
    EXPECT_NE(std::stoul(f, nullptr, 16) & 1, 0u) << "IFF_UP";
    // The same name cannot be taken twice while it is open (and the error names it).
    try {
      OpenTap({name});
      ADD_FAILURE() << "a second open of " << name << " succeeded";
    } catch (const VmmError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (stat(sys.c_str(), &st) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NE(stat(sys.c_str(), &st), 0) << name << " outlived its fd";
}

TEST(Tap, CreatesTheTapInsideAnotherNetworkNamespace) {
  std::string why;
  if (!CanMakeTaps(&why)) GTEST_SKIP() << why;
  std::string ns = "stntest-ns" + std::to_string(getpid() % 100000);
  if (system(("ip netns add " + ns + " 2>/dev/null").c_str()) != 0) GTEST_SKIP() << "cannot make a network namespace here";
  std::string path = "/var/run/netns/" + ns;
  {
    UniqueFd tap = OpenTap({"podtap0", path, 1450});
    struct stat st;
    EXPECT_NE(stat("/sys/class/net/podtap0", &st), 0) << "the tap must not be in the test's own namespace";
    std::string inside = Shell("ip netns exec " + ns + " cat /sys/class/net/podtap0/mtu 2>&1");
    EXPECT_EQ(inside, "1450\n");
    try {
      OpenTap({"podtap1", "/var/run/netns/no-such-namespace"});
      ADD_FAILURE() << "a tap in a missing namespace was made";
    } catch (const VmmError& e) {
      EXPECT_NE(std::string(e.what()).find("no-such-namespace"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(Shell("ip netns exec " + ns + " ls /sys/class/net"), "lo\n") << "the tap went with its fd";
  system(("ip netns delete " + ns).c_str());
}

// A pod migrating to another process on the same host: the new VM joins the tap as a detached
// queue, attaches it when it runs, and the tap outlives the old VM's queue.
TEST(Tap, ASecondQueueJoinsDetachedAttachesAndKeepsTheTap) {
  std::string why;
  if (!CanMakeTaps(&why)) GTEST_SKIP() << why;
  std::string name = "stnjoin" + std::to_string(getpid() % 100000);
  std::string sys = "/sys/class/net/" + name;
  TapOptions join{name};
  join.join_detached = true;
  try {
    OpenTap(join);
    ADD_FAILURE() << "joined a tap that does not exist";
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("no such interface to join"), std::string::npos) << e.what();
  }
  UniqueFd first = OpenTap({name});
  UniqueFd second = OpenTap(join);
  ifreq ifr{};
  ifr.ifr_flags = IFF_DETACH_QUEUE;
  EXPECT_NE(ioctl(second.get(), TUNSETQUEUE, &ifr), 0) << "the joined queue should start detached";
  SetTapQueueAttached(second.get(), true);
  EXPECT_THROW(SetTapQueueAttached(second.get(), true), VmmError);  // attached already: EINVAL, named
  int size = 0;
  ASSERT_EQ(ioctl(second.get(), TUNGETVNETHDRSZ, &size), 0);
  EXPECT_EQ(size, 12);
  first.reset();
  struct stat st;
  EXPECT_EQ(stat(sys.c_str(), &st), 0) << "the tap went with its first queue";
  second.reset();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (stat(sys.c_str(), &st) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NE(stat(sys.c_str(), &st), 0) << name << " outlived its last queue";
}
