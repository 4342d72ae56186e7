// host/netlink: links, addresses and routes read over rtnetlink as `ip` shows them, and the tc
// ingress redirects, in a throwaway network namespace (`ip netns add`) set up with `ip` and `tc`.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../src/error.h"
#include "../src/host/netlink.h"

using namespace stencil;

namespace {

struct ShellResult {
  int status = -1;
  std::string out;  // stdout and stderr
};

ShellResult Shell(const std::string& cmd) {
  ShellResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) r.out += buf;
  int status = pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

std::vector<std::string> Words(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

using RouteTuple = std::tuple<std::string, std::string, std::string, std::string>;  // dst, gateway, dev, protocol

// `ip route show`'s lines as (dst, gateway, dev, protocol): a leading route type (blackhole, ...)
// is not the destination, and no "proto" is boot (ip leaves that one out).
std::vector<RouteTuple> IpRoutes(const std::string& text) {
  static const std::set<std::string> kTypes = {"unicast", "local", "broadcast", "anycast", "multicast", "blackhole",
                                               "unreachable", "prohibit", "throw", "nat"};
  std::vector<RouteTuple> out;
  for (const std::string& line : Lines(text)) {
    std::vector<std::string> w = Words(line);
    size_t i = kTypes.count(w[0]) ? 1 : 0;
    RouteTuple r{w.at(i), "", "", "boot"};
    for (i++; i + 1 < w.size(); i++) {
      if (w[i] == "via") std::get<1>(r) = w[i + 1];
      if (w[i] == "dev") std::get<2>(r) = w[i + 1];
      if (w[i] == "proto") std::get<3>(r) = w[i + 1];
    }
    out.push_back(r);
  }
  return out;
}

std::vector<RouteTuple> Tuples(const std::vector<NetRoute>& routes) {
  std::vector<RouteTuple> out;
  for (const NetRoute& r : routes) out.emplace_back(r.destination, r.gateway, r.device, r.protocol);
  return out;
}

const NetInterface* Find(const NetState& s, const std::string& name) {
  for (const NetInterface& l : s.links)
    if (l.name == name) return &l;
  return nullptr;
}

std::string Message(const std::function<void()>& call) {
  try {
    call();
  } catch (const VmmError& e) {
    return e.what();
  }
  return "(no error)";
}

class NetlinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "making a network namespace needs root";
    name_ = "stencil-nlt-" + std::to_string(getpid());
    path_ = "/run/netns/" + name_;
    ShellResult add = Shell("ip netns add " + name_);
    if (add.status != 0) GTEST_SKIP() << "cannot make a network namespace here: " << add.out;
    made_ = true;
    // What CNI leaves, and more: a veth (v0, with a MAC, an MTU and two addresses, and v1), a tun
    // (neither Ethernet nor loopback), and routes of several kinds, one in another table.
    for (const char* cmd : {"link set lo up", "link add v0 type veth peer name v1", "link set v0 address 02:11:22:33:44:55 mtu 1400 up",
                            "link set v1 up", "addr add 10.98.0.5/24 dev v0", "addr add 10.98.1.5/16 dev v0",
                            "tuntap add tun7 mode tun", "route add default via 10.98.0.1",
                            "route add 10.96.0.0/12 via 10.98.0.1 proto static", "route add 10.97.0.9 dev v0",
                            "route add 10.97.0.10/32 via 10.98.0.1 dev v0 proto dhcp", "route add 10.50.0.0/16 dev v0 table 100",
                            "route add blackhole 10.60.0.0/16"}) {
      ShellResult r = Ip(cmd);
      ASSERT_EQ(r.status, 0) << "ip " << cmd << ": " << r.out;
    }
  }
  void TearDown() override {
    if (made_) Shell("ip netns delete " + name_);
  }
  ShellResult Ip(const std::string& args) { return Shell("ip -n " + name_ + " " + args); }
  ShellResult InNs(const std::string& cmd) { return Shell("ip netns exec " + name_ + " " + cmd); }
  // Why this kernel cannot do the redirect with tc itself (e.g. no cls_matchall), "" when it can.
  std::string TcCannotRedirect() {
    ShellResult r = InNs("sh -c 'tc qdisc add dev v1 ingress && tc filter add dev v1 parent ffff: protocol all matchall action mirred egress redirect dev v0'");
    InNs("tc qdisc del dev v1 ingress");
    return r.status == 0 ? "" : r.out;
  }

  std::string name_, path_;
  bool made_ = false;
};

}  // namespace

TEST_F(NetlinkTest, ReadsTheLinksWithTheirAddressesAsIpShowsThem) {
  NetState s = ReadNetState(path_);
  const NetInterface* v0 = Find(s, "v0");
  ASSERT_NE(v0, nullptr);
  EXPECT_EQ(v0->type, LinkType::kEther);
  EXPECT_EQ(v0->mac, "02:11:22:33:44:55");
  EXPECT_EQ(v0->mtu, 1400u);
  EXPECT_TRUE(v0->up);
  ASSERT_EQ(v0->addresses.size(), 2u);
  EXPECT_EQ(v0->addresses[0].address, "10.98.0.5");
  EXPECT_EQ(v0->addresses[0].prefix_length, 24u);
  EXPECT_EQ(v0->addresses[1].address, "10.98.1.5");
  EXPECT_EQ(v0->addresses[1].prefix_length, 16u);
  const NetInterface* lo = Find(s, "lo");
  ASSERT_NE(lo, nullptr);
  EXPECT_EQ(lo->type, LinkType::kLoopback);
  ASSERT_EQ(lo->addresses.size(), 1u);
  EXPECT_EQ(lo->addresses[0].address, "127.0.0.1");
  const NetInterface* tun = Find(s, "tun7");
  ASSERT_NE(tun, nullptr);
  EXPECT_EQ(tun->type, LinkType::kOther);
  EXPECT_EQ(tun->mac, "") << "a tun has no hardware address";
  EXPECT_FALSE(tun->up);

  // Every link as `ip -o link show` prints it ("5: v0@v1: <...,UP,...> mtu 1400 ... link/ether MAC brd ..."),
  // in the same order, with the addresses `ip -o -4 addr show` prints for it.
  std::map<int, std::vector<std::string>> ip_addresses;
  for (const std::string& line : Lines(Ip("-o -4 addr show").out)) {
    std::vector<std::string> w = Words(line);
    ip_addresses[std::stoi(w.at(0))].push_back(w.at(3));
  }
  std::vector<std::string> ip_links = Lines(Ip("-o link show").out);
  ASSERT_EQ(ip_links.size(), s.links.size());
  for (size_t i = 0; i < ip_links.size(); i++) {
    const NetInterface& l = s.links[i];
    std::vector<std::string> w = Words(ip_links[i]);
    std::string name = w.at(1).substr(0, w[1].find_first_of("@:"));
    SCOPED_TRACE(ip_links[i]);
    EXPECT_EQ(std::stoi(w[0]), l.index);
    EXPECT_EQ(name, l.name);
    EXPECT_EQ(w.at(2).find(",UP") != std::string::npos || w[2].find("<UP") != std::string::npos, l.up);
    EXPECT_EQ(w.at(3), "mtu");
    EXPECT_EQ(std::stoul(w.at(4)), l.mtu);
    size_t at = 0;
    while (at < w.size() && w[at].rfind("link/", 0) != 0) at++;
    ASSERT_LT(at, w.size());
    std::string type = w[at].substr(5);
    EXPECT_EQ(type == "ether" ? LinkType::kEther : type == "loopback" ? LinkType::kLoopback : LinkType::kOther, l.type);
    EXPECT_EQ(at + 1 < w.size() && w[at + 1] != "brd" ? w[at + 1] : "", l.mac);
    std::vector<std::string> mine;
    for (const NetAddress& a : l.addresses) mine.push_back(a.address + "/" + std::to_string(a.prefix_length));
    EXPECT_EQ(mine, ip_addresses[l.index]);
  }
}

TEST_F(NetlinkTest, ReadsTheMainTableRoutesAsIpRouteShowsThem) {
  NetState s = ReadNetState(path_);
  std::vector<RouteTuple> mine = Tuples(s.routes);
  EXPECT_EQ(mine, IpRoutes(Ip("route show").out));
  // As `ip -j route show` prints dst: "default", a host route without /32; and the table-100 route left out.
  std::vector<RouteTuple> expected = {
      {"default", "10.98.0.1", "v0", "boot"},
      {"10.60.0.0/16", "", "", "boot"},
      {"10.96.0.0/12", "10.98.0.1", "v0", "static"},
      {"10.97.0.9", "", "v0", "boot"},
      {"10.97.0.10", "10.98.0.1", "v0", "dhcp"},
      {"10.98.0.0/24", "", "v0", "kernel"},
      {"10.98.0.0/16", "", "v0", "kernel"},
  };
  EXPECT_EQ(mine, expected);
}

TEST_F(NetlinkTest, NamesEachRouteProtocolAsIpDoes) {
  std::vector<int> protocols = {0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 42, 99, 186, 187, 188, 189, 192, 200, 255};
  for (int p : protocols) {
    ShellResult r = Ip("route add 10.70." + std::to_string(p) + ".0/24 dev v0 proto " + std::to_string(p));
    ASSERT_EQ(r.status, 0) << r.out;
  }
  EXPECT_EQ(Tuples(ReadNetState(path_).routes), IpRoutes(Ip("route show").out));
}

TEST_F(NetlinkTest, ReadsThisThreadsNamespaceWithoutAPathAndNamesAMissingOne) {
  NetState here = ReadNetState("");
  EXPECT_NE(Find(here, "lo"), nullptr);
  EXPECT_EQ(Find(here, "v0"), nullptr) << "the test's v0 is in its own namespace";
  std::string missing = "/run/netns/stencil-no-such-namespace";
  EXPECT_NE(Message([&] { ReadNetState(missing); }).find(missing), std::string::npos);
  EXPECT_NE(Message([&] { DeleteIngress(missing, "eth0"); }).find(missing), std::string::npos);
}

TEST_F(NetlinkTest, RedirectsEachWayWithMatchallAndMirredAndDeletesTheQdisc) {
  std::string why = TcCannotRedirect();
  if (!why.empty()) GTEST_SKIP() << "this kernel cannot redirect with tc matchall: " << why;
  AddIngressRedirect(path_, "v0", "v1");
  AddIngressRedirect(path_, "v1", "v0");
  for (auto [from, to] : {std::pair<std::string, std::string>{"v0", "v1"}, {"v1", "v0"}}) {
    std::string filters = InNs("tc filter show dev " + from + " ingress").out;
    EXPECT_NE(filters.find("matchall"), std::string::npos) << filters;
    EXPECT_NE(filters.find("mirred (Egress Redirect to device " + to + ") stolen"), std::string::npos) << filters;
  }
  std::string again = Message([&] { AddIngressRedirect(path_, "v0", "v1"); });
  EXPECT_NE(again.find("in network namespace " + path_ + ": adding the ingress qdisc on v0: File exists"), std::string::npos) << again;
  DeleteIngress(path_, "v0");
  EXPECT_EQ(InNs("tc qdisc show dev v0 ingress").out, "");
  EXPECT_NE(InNs("tc filter show dev v1 ingress").out, "") << "v1's redirect is its own";
  DeleteIngress(path_, "v0");  // none: no error
  DeleteIngress(path_, "v1");
  EXPECT_EQ(InNs("tc qdisc show dev v1 ingress").out, "");
}

TEST_F(NetlinkTest, AFailedFilterLeavesNoQdiscAndTheErrorNamesTheStep) {
  std::string why = TcCannotRedirect();
  if (why.empty()) GTEST_SKIP() << "this kernel has cls_matchall: the filter cannot be made to fail here";
  std::string error = Message([&] { AddIngressRedirect(path_, "v0", "v1"); });
  EXPECT_NE(error.find("in network namespace " + path_ + ": adding the matchall filter redirecting v0 to v1: "), std::string::npos) << error;
  EXPECT_EQ(InNs("tc qdisc show dev v0 ingress").out, "") << "the qdisc added before the filter stayed";
}

TEST_F(NetlinkTest, AnIngressQdiscTakenAlreadyOrAMissingDeviceIsNamed) {
  ASSERT_EQ(InNs("tc qdisc add dev v0 ingress").status, 0);
  std::string taken = Message([&] { AddIngressRedirect(path_, "v0", "v1"); });
  EXPECT_NE(taken.find("in network namespace " + path_ + ": adding the ingress qdisc on v0: File exists"), std::string::npos) << taken;
  EXPECT_NE(InNs("tc qdisc show dev v0 ingress").out, "") << "a qdisc this call did not add is not its to remove";
  std::string missing = Message([&] { AddIngressRedirect(path_, "v1", "nosuch0"); });
  EXPECT_NE(missing.find("looking up the device nosuch0: No such device"), std::string::npos) << missing;
  EXPECT_EQ(InNs("tc qdisc show dev v1 ingress").out, "") << "nothing is added before both devices are known";
  EXPECT_THROW(AddIngressRedirect(path_, std::string(16, 'x'), "v1"), VmmError);
}

TEST_F(NetlinkTest, DeleteIngressRemovesTheQdiscOnceAndLeavesOtherKindsAlone) {
  ASSERT_EQ(InNs("tc qdisc add dev v0 ingress").status, 0);
  DeleteIngress(path_, "v0");
  EXPECT_EQ(InNs("tc qdisc show dev v0 ingress").out, "");
  DeleteIngress(path_, "v0");       // no such qdisc any more
  DeleteIngress(path_, "v1");       // never had one
  DeleteIngress(path_, "nosuch0");  // no such device
  // A clsact qdisc (a CNI's eBPF programs) sits where ingress would: not ours to delete.
  if (InNs("tc qdisc add dev v1 clsact").status == 0) {
    DeleteIngress(path_, "v1");
    EXPECT_NE(InNs("tc qdisc show dev v1").out.find("clsact"), std::string::npos);
  }
  try {
    DeleteIngress(path_, "");
    ADD_FAILURE() << "an empty device name was taken";
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}
