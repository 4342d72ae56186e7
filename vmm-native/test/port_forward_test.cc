// host/port_forward: the loopback listener (here and in another namespace) and SO_ORIGINAL_DST of
// a connection that was not NATed. The NATed case runs with iptables in
// shim/src/network/port-forward.test.ts.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "../src/error.h"
#include "../src/host/port_forward.h"

using namespace stencil;

namespace {

UniqueFd Dial(uint16_t port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) return UniqueFd();
  return fd;
}

}  // namespace

TEST(PortForward, ListensOnAFreeLoopbackPortAndAPlainConnectionHasNoOtherOriginalDestination) {
  LoopbackListener l = ListenOnLoopback("", 0);
  ASSERT_TRUE(l.fd.valid());
  ASSERT_NE(l.port, 0);
  UniqueFd client = Dial(l.port);
  ASSERT_TRUE(client.valid());
  UniqueFd accepted;
  for (int i = 0; i < 100 && !accepted.valid(); i++) {
    accepted = UniqueFd(accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!accepted.valid()) usleep(10'000);
  }
  ASSERT_TRUE(accepted.valid());
  try {
    // Where conntrack tracks connections (once any NAT rule loaded it, e.g. CNI's portmap), an
    // unredirected one reports where it really went.
    Ipv4Endpoint e = OriginalDestination(accepted.get());
    EXPECT_EQ(e.address, "127.0.0.1");
    EXPECT_EQ(e.port, l.port);
  } catch (const VmmError& e) {
    // Without conntrack there is no original destination to report.
    EXPECT_NE(std::string(e.what()).find("SO_ORIGINAL_DST"), std::string::npos) << e.what();
  }
}

TEST(PortForward, ANamespaceThatDoesNotExistIsNamedInTheError) {
  try {
    ListenOnLoopback("/run/netns/stencil-no-such-namespace", 0);
    FAIL() << "listening in a missing namespace succeeded";
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("/run/netns/stencil-no-such-namespace"), std::string::npos) << e.what();
  }
}

TEST(PortForward, ListensInsideAnotherNetworkNamespace) {
  if (geteuid() != 0) GTEST_SKIP() << "making a network namespace needs root";
  std::string name = "stencil-pft-" + std::to_string(getpid());
  ASSERT_EQ(std::system(("ip netns add " + name + " && ip -n " + name + " link set lo up").c_str()), 0);
  LoopbackListener l = ListenOnLoopback("/run/netns/" + name, 0);
  // From inside that namespace the listener answers; from this one, the port is closed (nothing
  // here listens on an ephemeral port the other namespace picked).
  UniqueFd here = Dial(l.port);
  std::string dial = "ip netns exec " + name + " bash -c 'exec 3<>/dev/tcp/127.0.0.1/" + std::to_string(l.port) + "' 2>/dev/null";
  int in_namespace = std::system(dial.c_str());
  std::system(("ip netns del " + name).c_str());
  EXPECT_FALSE(here.valid()) << "port " << l.port << " answered in this namespace";
  EXPECT_EQ(in_namespace, 0) << "a connection from inside the namespace did not reach the listener";
}
