// rtnetlink in a pod's network namespace: reading its interfaces, addresses and routes, and the
// tc ingress redirects that join the pod's veth to the VM's tap. Talking to the kernel directly
// replaces `ip -j` and `tc -batch` run through nsenter, a process each (~0.3 s under emulation).
// Each call opens its NETLINK_ROUTE socket on a short-lived thread inside the namespace
// (RunInNetns): the socket is bound to the namespace it was made in.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace stencil {

struct NetAddress {
  std::string address;  // IPv4, dotted quad (IFA_LOCAL, as `ip -j addr`'s "local")
  uint32_t prefix_length = 0;
};

enum class LinkType { kEther, kLoopback, kOther };  // from ifi_type (ARPHRD_*)

struct NetInterface {
  int index = 0;
  std::string name;
  LinkType type = LinkType::kOther;
  std::string mac;  // "aa:bb:cc:dd:ee:ff", lower case; empty when the link has no IFLA_ADDRESS
  uint32_t mtu = 0;
  bool up = false;  // IFF_UP (administratively)
  std::vector<NetAddress> addresses;  // IPv4 only, in the kernel's order
};

// An IPv4 route of the main table, its fields as `ip -j route show` prints them.
struct NetRoute {
  std::string destination;  // "default", "10.0.0.0/24", or a host route's bare address ("10.0.0.9")
  std::string gateway;      // empty: none (a link route)
  std::string device;       // empty: none (e.g. a blackhole or multipath route)
  std::string protocol;     // as `ip route` names it ("kernel", "boot", "static", "dhcp", ...), else the number
};

struct NetState {
  std::vector<NetInterface> links;
  std::vector<NetRoute> routes;
};

// The links (with their IPv4 addresses) and the IPv4 main-table routes of the network namespace
// at netns_path (empty: the calling thread's). Throws VmmError(kHostCall) naming the namespace and
// the dump that failed.
NetState ReadNetState(const std::string& netns_path);

// `tc qdisc add dev FROM ingress` and `tc filter add dev FROM parent ffff: protocol all matchall
// action mirred egress redirect dev TO`: every frame arriving on `from` leaves through `to`.
// Throws VmmError(kHostCall) naming the namespace, the step and the device, with the kernel's
// errno and extended-ack message; a qdisc it added before the filter failed is removed again.
void AddIngressRedirect(const std::string& netns_path, const std::string& from, const std::string& to);

// `tc qdisc del dev DEV ingress` (its filters go with it). No such qdisc, or no such device, is
// not an error: the redirect is gone either way.
void DeleteIngress(const std::string& netns_path, const std::string& dev);

}  // namespace stencil
