#include "netlink.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_mirred.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <vector>

#include "../error.h"
#include "../fd.h"
#include "netns.h"

namespace stencil {

namespace {

// How long a reply may take: the kernel answers at once, unless another process holds the rtnl
// lock for long. The caller (the shim's event loop) must not wait forever.
constexpr int kReplyTimeoutSeconds = 30;
// A dump that changed while it was read (NLM_F_DUMP_INTR) is read again, this many times at most.
constexpr int kDumpAttempts = 3;
// The ingress qdisc's handle, ffff:0 (`tc qdisc add dev X ingress`), and its filters' parent.
constexpr uint32_t kIngressHandle = TC_H_MAKE(TC_H_INGRESS, 0);

std::string Where(const std::string& netns_path) {
  return netns_path.empty() ? "in this network namespace" : "in network namespace " + netns_path;
}

void CheckDeviceName(const std::string& name, const char* call) {
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos)
    throw VmmError(ErrorCode::kInvalidArgument, std::string(call) + ": device name '" + name + "' must be 1 to " +
                                                    std::to_string(IFNAMSIZ - 1) + " bytes without '/'");
}

// One request: nlmsghdr, the family's header, then attributes (nests are closed by length).
class Request {
 public:
  Request(uint16_t type, uint16_t flags) : buf_(NLMSG_HDRLEN) {
    nlmsghdr* h = header();
    h->nlmsg_type = type;
    h->nlmsg_flags = flags;
  }
  template <typename T>
  void Family(const T& family_header) { Append(&family_header, sizeof family_header); }
  void Attr(uint16_t type, const void* data, size_t size) {
    rtattr a{};
    a.rta_len = static_cast<unsigned short>(RTA_LENGTH(size));
    a.rta_type = type;
    Append(&a, sizeof a);  // 4 bytes: the payload follows it directly
    Append(data, size);
  }
  void StringAttr(uint16_t type, const std::string& s) { Attr(type, s.c_str(), s.size() + 1); }
  size_t BeginNest(uint16_t type) {
    size_t at = buf_.size();
    Attr(type, nullptr, 0);
    return at;
  }
  void EndNest(size_t at) {
    unsigned short len = static_cast<unsigned short>(buf_.size() - at);
    std::memcpy(buf_.data() + at + offsetof(rtattr, rta_len), &len, sizeof len);
  }
  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  const std::vector<char>& bytes() {
    header()->nlmsg_len = static_cast<uint32_t>(buf_.size());
    return buf_;
  }

 private:
  // Appends and pads to the 4-byte alignment netlink messages and attributes share.
  void Append(const void* data, size_t size) {
    size_t at = buf_.size();
    buf_.resize(at + NLMSG_ALIGN(size));
    if (size) std::memcpy(buf_.data() + at, data, size);
  }
  std::vector<char> buf_;  // the allocator's alignment suits nlmsghdr
};

// One reply message, copied (so it is aligned and outlives the datagram it came in).
using Message = std::vector<char>;

const nlmsghdr* HeaderOf(const Message& m) { return reinterpret_cast<const nlmsghdr*>(m.data()); }

// The attributes after a message's family header, by type (types above `max` are left out; the
// last of a type wins, as in the kernel's own parser). Null where absent.
std::vector<const rtattr*> Attributes(const nlmsghdr* h, size_t family_size, unsigned max) {
  std::vector<const rtattr*> out(max + 1, nullptr);
  if (h->nlmsg_len < NLMSG_SPACE(family_size)) return out;
  int len = static_cast<int>(h->nlmsg_len - NLMSG_SPACE(family_size));
  auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(NLMSG_DATA(h)) + NLMSG_ALIGN(family_size));
  for (; RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    unsigned type = a->rta_type & NLA_TYPE_MASK;
    if (type <= max) out[type] = a;
  }
  return out;
}

bool U32Of(const rtattr* a, uint32_t* out) {
  if (!a || RTA_PAYLOAD(a) < sizeof *out) return false;
  std::memcpy(out, RTA_DATA(a), sizeof *out);
  return true;
}

std::string StringOf(const rtattr* a) {
  if (!a) return "";
  const char* s = static_cast<const char*>(RTA_DATA(a));
  return std::string(s, strnlen(s, RTA_PAYLOAD(a)));
}

std::string Ipv4Of(const rtattr* a) {
  if (!a || RTA_PAYLOAD(a) != sizeof(in_addr)) return "";
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, RTA_DATA(a), text, sizeof text);
  return text;
}

// A NETLINK_ROUTE socket of the calling thread's network namespace.
class RouteSocket {
 public:
  explicit RouteSocket(const std::string& where) : where_(where) {
    fd_ = UniqueFd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd_.valid()) throw VmmError(ErrorCode::kHostCall, WithErrno(where_ + ": NETLINK_ROUTE socket"));
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;  // nl_pid 0: the kernel picks the port
    socklen_t len = sizeof sa;
    if (bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 ||
        getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len) < 0)
      throw VmmError(ErrorCode::kHostCall, WithErrno(where_ + ": binding a NETLINK_ROUTE socket"));
    port_ = sa.nl_pid;
    // Best effort (older kernels lack them): the kernel's own words in errors, and error replies
    // without a copy of the request.
    int on = 1;
    setsockopt(fd_.get(), SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on);
    setsockopt(fd_.get(), SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof on);
    timeval timeout{kReplyTimeoutSeconds, 0};
    setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }

  // Sends a dump request and returns its messages (NLMSG_DONE and errors excluded).
  std::vector<Message> Dump(Request& request, const std::string& step) {
    for (int attempt = 1;; attempt++) {
      uint32_t seq = Send(request, step);
      std::vector<Message> messages;
      bool interrupted = false;
      for (bool done = false; !done;) {
        Message datagram = Receive(step);
        for (const nlmsghdr* h : Split(datagram, step)) {
          if (done || !Ours(h, seq)) continue;
          if (h->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
          if (h->nlmsg_type == NLMSG_DONE) {
            // A dump that failed part-way may say so here, as a negative errno.
            int error = 0;
            if (h->nlmsg_len >= NLMSG_LENGTH(sizeof error)) std::memcpy(&error, NLMSG_DATA(h), sizeof error);
            if (error < 0) Fail(step, error, "");
            done = true;
          } else if (h->nlmsg_type == NLMSG_ERROR) {
            std::string extack;
            int error = ErrorOf(h, step, &extack);
            if (error != 0) Fail(step, error, extack);
          } else if (h->nlmsg_type >= NLMSG_MIN_TYPE) {
            messages.emplace_back(reinterpret_cast<const char*>(h), reinterpret_cast<const char*>(h) + h->nlmsg_len);
          }
        }
      }
      if (!interrupted) return messages;
      if (attempt == kDumpAttempts)
        throw VmmError(ErrorCode::kHostCall, where_ + ": " + step + ": changed while it was read, " + std::to_string(kDumpAttempts) + " times");
    }
  }

  // Sends a request with NLM_F_ACK and returns its ack's error: 0 or a negative errno, with the
  // kernel's extended-ack message, if any, in *extack.
  int Call(Request& request, const std::string& step, std::string* extack) {
    request.header()->nlmsg_flags |= NLM_F_ACK;
    uint32_t seq = Send(request, step);
    for (;;) {
      Message datagram = Receive(step);
      for (const nlmsghdr* h : Split(datagram, step)) {
        if (Ours(h, seq) && h->nlmsg_type == NLMSG_ERROR) return ErrorOf(h, step, extack);
      }
    }
  }

  // Throws the error an ack carried: "<where>: <step>: <strerror> (<kernel's message>)".
  [[noreturn]] void Fail(const std::string& step, int error, const std::string& extack) const {
    throw VmmError(ErrorCode::kHostCall, WithErrno(where_ + ": " + step, -error) + (extack.empty() ? "" : " (" + extack + ")"));
  }

 private:
  uint32_t Send(Request& request, const std::string& step) {
    nlmsghdr* h = request.header();
    h->nlmsg_seq = ++seq_;
    h->nlmsg_pid = port_;
    const std::vector<char>& bytes = request.bytes();
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    ssize_t sent;
    do {
      sent = sendto(fd_.get(), bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(where_ + ": " + step + ": sending the request"));
    if (static_cast<size_t>(sent) != bytes.size()) throw VmmError(ErrorCode::kHostCall, where_ + ": " + step + ": the request was sent in part");
    return seq_;
  }

  // One datagram from the kernel, whole: its size is peeked first, so no reply is cut short.
  Message Receive(const std::string& step) {
    for (;;) {
      ssize_t size = recv(fd_.get(), nullptr, 0, MSG_PEEK | MSG_TRUNC);
      if (size < 0 && errno == EINTR) continue;
      if (size < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        throw VmmError(ErrorCode::kHostCall, where_ + ": " + step + ": no reply from the kernel in " + std::to_string(kReplyTimeoutSeconds) + " s");
      if (size < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(where_ + ": " + step + ": receiving the reply"));
      Message datagram(static_cast<size_t>(size));
      sockaddr_nl from{};
      socklen_t from_len = sizeof from;
      ssize_t got = recvfrom(fd_.get(), datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&from), &from_len);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw VmmError(ErrorCode::kHostCall, WithErrno(where_ + ": " + step + ": receiving the reply"));
      if (from.nl_pid != 0) continue;  // only the kernel's replies count
      datagram.resize(static_cast<size_t>(got));
      return datagram;
    }
  }

  // The messages of a datagram, as NLMSG_OK/NLMSG_NEXT walk them (spelled out: the macros compare
  // __u32 with int, which clang warns of). Bytes that form no whole message make it malformed.
  std::vector<const nlmsghdr*> Split(const Message& datagram, const std::string& step) const {
    std::vector<const nlmsghdr*> out;
    size_t at = 0;
    while (datagram.size() - at >= sizeof(nlmsghdr)) {
      auto* h = reinterpret_cast<const nlmsghdr*>(datagram.data() + at);
      if (h->nlmsg_len < sizeof(nlmsghdr) || h->nlmsg_len > datagram.size() - at) break;
      out.push_back(h);
      at = std::min(datagram.size(), at + NLMSG_ALIGN(h->nlmsg_len));
    }
    if (at != datagram.size()) throw VmmError(ErrorCode::kHostCall, where_ + ": " + step + ": a malformed reply from the kernel");
    return out;
  }

  // A reply to the request numbered seq (this socket is ours alone: anything else is stale).
  bool Ours(const nlmsghdr* h, uint32_t seq) const { return h->nlmsg_seq == seq && h->nlmsg_pid == port_; }

  // The errno of an NLMSG_ERROR (0: an ack) and the extended ack's message, when it has one.
  int ErrorOf(const nlmsghdr* h, const std::string& step, std::string* extack) const {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr)))
      throw VmmError(ErrorCode::kHostCall, where_ + ": " + step + ": a truncated error reply from the kernel");
    auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
    extack->clear();
    if (h->nlmsg_flags & NLM_F_ACK_TLVS) {
      // The TLVs follow the request's header, or the whole request when it was echoed (not capped).
      size_t at = NLMSG_HDRLEN + sizeof(nlmsgerr);
      if (!(h->nlmsg_flags & NLM_F_CAPPED) && err->msg.nlmsg_len >= NLMSG_HDRLEN) at += NLMSG_ALIGN(err->msg.nlmsg_len - NLMSG_HDRLEN);
      if (at < h->nlmsg_len) {
        int len = static_cast<int>(h->nlmsg_len - at);
        auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(h) + at);
        for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
          if ((a->rta_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) *extack = StringOf(a);
      }
    }
    return err->error;
  }

  std::string where_;
  UniqueFd fd_;
  uint32_t port_ = 0;
  uint32_t seq_ = 0;
};

LinkType LinkTypeOf(unsigned short arphrd) {
  if (arphrd == ARPHRD_ETHER) return LinkType::kEther;
  if (arphrd == ARPHRD_LOOPBACK) return LinkType::kLoopback;
  return LinkType::kOther;
}

std::string MacOf(const rtattr* a) {
  if (!a) return "";
  static const char kDigits[] = "0123456789abcdef";
  auto* bytes = static_cast<const unsigned char*>(RTA_DATA(a));
  std::string out;
  for (size_t i = 0; i < RTA_PAYLOAD(a); i++) {
    if (i) out += ':';
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 0xf];
  }
  return out;
}

// As `ip route` names a route's protocol: the numbers iproute2's stock rt_protos file names (the
// kernel's RTPROT_* but mrouted, 17), any other as its number.
std::string ProtocolName(unsigned char protocol) {
  switch (protocol) {
    case RTPROT_UNSPEC: return "unspec";
    case RTPROT_REDIRECT: return "redirect";
    case RTPROT_KERNEL: return "kernel";
    case RTPROT_BOOT: return "boot";
    case RTPROT_STATIC: return "static";
    case RTPROT_GATED: return "gated";
    case RTPROT_RA: return "ra";
    case RTPROT_MRT: return "mrt";
    case RTPROT_ZEBRA: return "zebra";
    case RTPROT_BIRD: return "bird";
    case RTPROT_DNROUTED: return "dnrouted";
    case RTPROT_XORP: return "xorp";
    case RTPROT_NTK: return "ntk";
    case RTPROT_DHCP: return "dhcp";
    case RTPROT_KEEPALIVED: return "keepalived";
    case RTPROT_BABEL: return "babel";
    case RTPROT_OPENR: return "openr";
    case RTPROT_BGP: return "bgp";
    case RTPROT_ISIS: return "isis";
    case RTPROT_OSPF: return "ospf";
    case RTPROT_RIP: return "rip";
    case RTPROT_EIGRP: return "eigrp";
    default: return std::to_string(protocol);
  }
}

std::vector<NetInterface> ReadLinks(RouteSocket& nl) {
  Request request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
  request.Family(ifinfomsg{});  // AF_UNSPEC: every link
  std::vector<NetInterface> links;
  for (const Message& m : nl.Dump(request, "listing the links")) {
    const nlmsghdr* h = HeaderOf(m);
    if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) continue;
    auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
    std::vector<const rtattr*> attrs = Attributes(h, sizeof *ifi, IFLA_MTU);
    NetInterface link;
    link.index = ifi->ifi_index;
    link.name = attrs[IFLA_IFNAME] ? StringOf(attrs[IFLA_IFNAME]) : "if" + std::to_string(ifi->ifi_index);
    link.type = LinkTypeOf(ifi->ifi_type);
    link.mac = MacOf(attrs[IFLA_ADDRESS]);
    U32Of(attrs[IFLA_MTU], &link.mtu);
    link.up = (ifi->ifi_flags & IFF_UP) != 0;
    links.push_back(std::move(link));
  }
  return links;
}

void ReadAddresses(RouteSocket& nl, std::vector<NetInterface>* links) {
  Request request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
  ifaddrmsg family{};
  family.ifa_family = AF_INET;
  request.Family(family);
  for (const Message& m : nl.Dump(request, "listing the IPv4 addresses")) {
    const nlmsghdr* h = HeaderOf(m);
    if (h->nlmsg_type != RTM_NEWADDR || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifaddrmsg))) continue;
    auto* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(h));
    if (ifa->ifa_family != AF_INET) continue;
    std::vector<const rtattr*> attrs = Attributes(h, sizeof *ifa, IFA_LOCAL);
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS the peer's, on point-to-point links).
    std::string address = Ipv4Of(attrs[IFA_LOCAL] ? attrs[IFA_LOCAL] : attrs[IFA_ADDRESS]);
    if (address.empty()) continue;
    for (NetInterface& link : *links) {
      if (link.index == static_cast<int>(ifa->ifa_index)) link.addresses.push_back({address, ifa->ifa_prefixlen});
    }
  }
}

std::vector<NetRoute> ReadRoutes(RouteSocket& nl, const std::vector<NetInterface>& links) {
  Request request(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP);
  rtmsg family{};
  family.rtm_family = AF_INET;
  request.Family(family);
  std::vector<NetRoute> routes;
  for (const Message& m : nl.Dump(request, "listing the IPv4 routes")) {
    const nlmsghdr* h = HeaderOf(m);
    if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) continue;
    auto* rtm = static_cast<const rtmsg*>(NLMSG_DATA(h));
    if (rtm->rtm_family != AF_INET || (rtm->rtm_flags & RTM_F_CLONED)) continue;
    std::vector<const rtattr*> attrs = Attributes(h, sizeof *rtm, RTA_TABLE);
    uint32_t table = rtm->rtm_table;  // RTA_TABLE holds ids above 255
    U32Of(attrs[RTA_TABLE], &table);
    if (table != RT_TABLE_MAIN) continue;
    NetRoute route;
    // As `ip route` prints a destination: a host route as a bare address, else address/length.
    if (rtm->rtm_dst_len == 0) {
      route.destination = "default";
    } else {
      std::string dst = Ipv4Of(attrs[RTA_DST]);
      if (dst.empty()) dst = "0";
      route.destination = rtm->rtm_dst_len == 32 ? dst : dst + "/" + std::to_string(rtm->rtm_dst_len);
    }
    route.gateway = Ipv4Of(attrs[RTA_GATEWAY]);
    uint32_t oif = 0;
    if (U32Of(attrs[RTA_OIF], &oif)) {
      route.device = "if" + std::to_string(oif);  // a link that came after the link dump
      for (const NetInterface& link : links)
        if (link.index == static_cast<int>(oif)) route.device = link.name;
    }
    route.protocol = ProtocolName(rtm->rtm_protocol);
    routes.push_back(std::move(route));
  }
  return routes;
}

// The index of a device in this thread's namespace (if_nametoindex asks through a socket).
unsigned DeviceIndex(const std::string& name, const std::string& where) {
  unsigned index = if_nametoindex(name.c_str());
  if (index == 0) {
    int error = errno;
    throw VmmError(ErrorCode::kHostCall, WithErrno(where + ": looking up the device " + name, error));
  }
  return index;
}

tcmsg IngressQdisc(unsigned ifindex) {
  tcmsg tc{};
  tc.tcm_family = AF_UNSPEC;
  tc.tcm_ifindex = static_cast<int>(ifindex);
  tc.tcm_handle = kIngressHandle;
  tc.tcm_parent = TC_H_INGRESS;
  return tc;
}

// RTM_DELQDISC of dev's ingress qdisc: its ack's error (0, or a negative errno).
int DeleteIngressQdisc(RouteSocket& nl, unsigned ifindex, const std::string& step, std::string* extack) {
  Request request(RTM_DELQDISC, NLM_F_REQUEST);
  request.Family(IngressQdisc(ifindex));
  // Named: another kind of qdisc there (clsact, e.g. a CNI's eBPF) is left alone (EINVAL).
  request.StringAttr(TCA_KIND, "ingress");
  return nl.Call(request, step, extack);
}

void AddIngressRedirectHere(const std::string& where, const std::string& from, const std::string& to) {
  RouteSocket nl(where);
  unsigned from_index = DeviceIndex(from, where);
  unsigned to_index = DeviceIndex(to, where);

  std::string extack;
  std::string step = "adding the ingress qdisc on " + from;
  Request qdisc(RTM_NEWQDISC, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
  qdisc.Family(IngressQdisc(from_index));
  qdisc.StringAttr(TCA_KIND, "ingress");
  if (int error = nl.Call(qdisc, step, &extack)) nl.Fail(step, error, extack);

  // The filter, as tc encodes `matchall action mirred egress redirect dev TO`: the action list is
  // a nest of actions numbered from 1, each with its kind and its options.
  step = "adding the matchall filter redirecting " + from + " to " + to;
  Request filter(RTM_NEWTFILTER, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
  tcmsg tc{};
  tc.tcm_family = AF_UNSPEC;
  tc.tcm_ifindex = static_cast<int>(from_index);
  tc.tcm_parent = kIngressHandle;
  tc.tcm_info = TC_H_MAKE(0, htons(ETH_P_ALL));  // priority 0: the kernel picks one
  filter.Family(tc);
  filter.StringAttr(TCA_KIND, "matchall");
  size_t options = filter.BeginNest(TCA_OPTIONS);
  size_t actions = filter.BeginNest(TCA_MATCHALL_ACT);
  size_t first = filter.BeginNest(1);
  filter.StringAttr(TCA_ACT_KIND, "mirred");
  size_t action_options = filter.BeginNest(TCA_ACT_OPTIONS | NLA_F_NESTED);
  tc_mirred mirred{};
  mirred.action = TC_ACT_STOLEN;  // redirected: the frame goes no further on `from`
  mirred.eaction = TCA_EGRESS_REDIR;
  mirred.ifindex = to_index;
  filter.Attr(TCA_MIRRED_PARMS, &mirred, sizeof mirred);
  filter.EndNest(action_options);
  filter.EndNest(first);
  filter.EndNest(actions);
  filter.EndNest(options);
  if (int error = nl.Call(filter, step, &extack)) {
    std::string ignored;
    DeleteIngressQdisc(nl, from_index, "removing the ingress qdisc again", &ignored);  // the one added above
    nl.Fail(step, error, extack);
  }
}

void DeleteIngressHere(const std::string& where, const std::string& dev) {
  unsigned index = if_nametoindex(dev.c_str());
  if (!index) return;  // gone, and its qdiscs with it
  RouteSocket nl(where);
  std::string extack;
  std::string step = "deleting the ingress qdisc on " + dev;
  int error = DeleteIngressQdisc(nl, index, step, &extack);
  // ENOENT: no ingress queue; EINVAL: its qdisc is not (any more) an ingress one; ENODEV: the
  // device went meanwhile.
  if (error != 0 && error != -ENOENT && error != -EINVAL && error != -ENODEV) nl.Fail(step, error, extack);
}

}  // namespace

NetState ReadNetState(const std::string& netns_path) {
  std::string where = Where(netns_path);
  return RunInNetns(netns_path, where + ": reading the links and routes", [&] {
    RouteSocket nl(where);
    NetState state;
    state.links = ReadLinks(nl);
    ReadAddresses(nl, &state.links);
    state.routes = ReadRoutes(nl, state.links);
    return state;
  });
}

void AddIngressRedirect(const std::string& netns_path, const std::string& from, const std::string& to) {
  CheckDeviceName(from, "AddIngressRedirect");
  CheckDeviceName(to, "AddIngressRedirect");
  std::string where = Where(netns_path);
  RunInNetns(netns_path, where + ": redirecting " + from + " to " + to, [&] {
    AddIngressRedirectHere(where, from, to);
    return true;  // RunInNetns returns a value
  });
}

void DeleteIngress(const std::string& netns_path, const std::string& dev) {
  CheckDeviceName(dev, "DeleteIngress");
  std::string where = Where(netns_path);
  RunInNetns(netns_path, where + ": deleting the ingress qdisc on " + dev, [&] {
    DeleteIngressHere(where, dev);
    return true;
  });
}

}  // namespace stencil
