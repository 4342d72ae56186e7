// The agent's rtnetlink client: the pod NIC's addresses and the pod's routes, set with one
// request each on a NETLINK_ROUTE socket. It replaced forking `busybox ip` four times per pod,
// which cost a third of a second of a clone's start in an emulated guest. The caller (net.c) has
// checked every value's form; the kernel's answer to each request is its errno.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "linux_abi.h"
#include "rtnl.h"

#define RTNL_BUF 8192

struct rtnl_req {
  struct nlmsghdr nh;
  unsigned char body[512];
};

int rtnl_open(void) { return socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, STENCIL_NETLINK_ROUTE); }

static void *req_tail(struct rtnl_req *r) { return (char *)r + NLMSG_ALIGN(r->nh.nlmsg_len); }

static void put_attr(struct rtnl_req *r, unsigned short type, const void *data, size_t len) {
  struct rtattr *a = req_tail(r);
  a->rta_type = type;
  a->rta_len = (unsigned short)RTA_LENGTH(len);
  memcpy(RTA_DATA(a), data, len);
  r->nh.nlmsg_len = NLMSG_ALIGN(r->nh.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

// Numbers and sends `r` (with `flags` added to NLM_F_REQUEST); its sequence number, or 0 with errno.
static unsigned send_request(int fd, struct rtnl_req *r, unsigned short flags) {
  static unsigned seq;
  if (++seq == 0) seq = 1;  // 0 means "not sent"
  r->nh.nlmsg_seq = seq;
  r->nh.nlmsg_flags |= NLM_F_REQUEST | flags;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(fd, r, r->nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return 0;
  return r->nh.nlmsg_seq;
}

// The kernel's error in an NLMSG_ERROR reply (0 for an acknowledgement).
static int reply_error(const struct nlmsghdr *h) { return -((const struct nlmsgerr *)NLMSG_DATA(h))->error; }

// Sends `r` and reads the kernel's acknowledgement: 0, or -1 with errno set to the kernel's error.
static int talk(int fd, struct rtnl_req *r) {
  unsigned seq = send_request(fd, r, NLM_F_ACK);
  if (!seq) return -1;
  char buf[RTNL_BUF];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
      errno = reply_error(h);
      return errno ? -1 : 0;
    }
  }
}

// "ADDR/LEN" -> family, address bytes, prefix length. The form was checked by the caller; this
// parses it and fails (-1) on what inet_pton or the length's range refuse.
static int parse_cidr(const char *cidr, int *family, unsigned char addr[16], unsigned *prefix) {
  char host[64];
  const char *slash = strchr(cidr, '/');
  if (!slash || (size_t)(slash - cidr) >= sizeof host) return -1;
  memcpy(host, cidr, (size_t)(slash - cidr));
  host[slash - cidr] = 0;
  char *end;
  unsigned long len = strtoul(slash + 1, &end, 10);
  if (*end || end == slash + 1) return -1;
  if (inet_pton(AF_INET, host, addr) == 1) *family = AF_INET;
  else if (inet_pton(AF_INET6, host, addr) == 1) *family = AF_INET6;
  else return -1;
  if (len > (*family == AF_INET ? 32u : 128u)) return -1;
  *prefix = (unsigned)len;
  return 0;
}

static size_t addr_len(int family) { return family == AF_INET ? 4 : 16; }

int rtnl_flush_addresses(int fd, unsigned ifindex, char **msg) {
  struct rtnl_req dump = {.nh = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg)), .nlmsg_type = RTM_GETADDR}};
  unsigned seq = send_request(fd, &dump, NLM_F_DUMP);
  if (!seq) {
    *msg = xasprintf("RTM_GETADDR: %s", strerror(errno));
    return -1;
  }
  // Collected first: deleting while the dump runs would disturb it.
  struct rtnl_req *gone = NULL;
  size_t n_gone = 0;
  char buf[RTNL_BUF];
  for (bool done = false; !done;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *msg = xasprintf("RTM_GETADDR: %s", strerror(errno));
      free(gone);
      return -1;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR && reply_error(h)) {
        *msg = xasprintf("RTM_GETADDR: %s", strerror(reply_error(h)));
        free(gone);
        return -1;
      }
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        done = true;
        break;
      }
      const struct ifaddrmsg *ifa = NLMSG_DATA(h);
      if (h->nlmsg_type != RTM_NEWADDR || ifa->ifa_index != ifindex) continue;
      gone = xrealloc(gone, (n_gone + 1) * sizeof *gone);
      struct rtnl_req *del = &gone[n_gone++];
      memset(del, 0, sizeof *del);
      del->nh = (struct nlmsghdr){.nlmsg_len = NLMSG_LENGTH(sizeof *ifa), .nlmsg_type = RTM_DELADDR};
      memcpy(NLMSG_DATA(&del->nh), ifa, sizeof *ifa);
      size_t left = IFA_PAYLOAD(h);
      for (const struct rtattr *a = IFA_RTA(ifa); RTA_OK(a, left); a = RTA_NEXT(a, left))
        if ((a->rta_type == IFA_LOCAL || a->rta_type == IFA_ADDRESS) && RTA_PAYLOAD(a) <= 16)
          put_attr(del, a->rta_type, RTA_DATA(a), RTA_PAYLOAD(a));
    }
  }
  int rc = 0;
  for (size_t i = 0; i < n_gone && rc == 0; i++)
    // An IPv6 address can go with the one before it (its prefix route's owner): not an error.
    if (talk(fd, &gone[i]) < 0 && errno != EADDRNOTAVAIL) {
      *msg = xasprintf("RTM_DELADDR (flushing the interface's addresses): %s", strerror(errno));
      rc = -1;
    }
  free(gone);
  return rc;
}

int rtnl_add_address(int fd, unsigned ifindex, const char *cidr, char **msg) {
  int family;
  unsigned char addr[16];
  unsigned prefix;
  if (parse_cidr(cidr, &family, addr, &prefix) < 0) {
    *msg = xasprintf("address \"%s\" is not an IPv4 or IPv6 CIDR", cidr);
    return -1;
  }
  struct rtnl_req r = {.nh = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg)), .nlmsg_type = RTM_NEWADDR,
                              .nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL}};
  struct ifaddrmsg *ifa = NLMSG_DATA(&r.nh);
  *ifa = (struct ifaddrmsg){.ifa_family = (unsigned char)family, .ifa_prefixlen = (unsigned char)prefix, .ifa_index = ifindex};
  // As `ip addr add`: IFA_LOCAL is the address, IFA_ADDRESS the same on a broadcast link.
  put_attr(&r, IFA_LOCAL, addr, addr_len(family));
  put_attr(&r, IFA_ADDRESS, addr, addr_len(family));
  if (talk(fd, &r) < 0) {
    *msg = xasprintf("adding address %s: %s", cidr, strerror(errno));
    return -1;
  }
  return 0;
}

int rtnl_replace_route(int fd, const char *destination, const char *gateway, unsigned ifindex, char **msg) {
  int family = AF_UNSPEC, gw_family = AF_UNSPEC;
  unsigned char dst[16], gw[16];
  unsigned prefix = 0;
  const bool is_default = strcmp(destination, "default") == 0;
  if (!is_default && parse_cidr(destination, &family, dst, &prefix) < 0) {
    *msg = xasprintf("route destination \"%s\" is not \"default\" or a CIDR", destination);
    return -1;
  }
  if (gateway[0]) {
    if (inet_pton(AF_INET, gateway, gw) == 1) gw_family = AF_INET;
    else if (inet_pton(AF_INET6, gateway, gw) == 1) gw_family = AF_INET6;
    else {
      *msg = xasprintf("route gateway \"%s\" is not an IP address", gateway);
      return -1;
    }
  }
  if (family == AF_UNSPEC) family = gw_family == AF_UNSPEC ? AF_INET : gw_family;
  if (gw_family != AF_UNSPEC && gw_family != family) {
    *msg = xasprintf("route to %s via %s mixes IPv4 and IPv6", destination, gateway);
    return -1;
  }
  struct rtnl_req r = {.nh = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg)), .nlmsg_type = RTM_NEWROUTE,
                              .nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE}};
  struct rtmsg *rt = NLMSG_DATA(&r.nh);
  // As `ip route replace`: the main table, protocol "boot"; a route without a gateway is on-link.
  *rt = (struct rtmsg){.rtm_family = (unsigned char)family, .rtm_dst_len = (unsigned char)prefix,
                       .rtm_table = RT_TABLE_MAIN, .rtm_protocol = RTPROT_BOOT,
                       .rtm_scope = gateway[0] ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK, .rtm_type = RTN_UNICAST};
  if (!is_default) put_attr(&r, RTA_DST, dst, addr_len(family));
  if (gateway[0]) put_attr(&r, RTA_GATEWAY, gw, addr_len(family));
  if (ifindex) put_attr(&r, RTA_OIF, &ifindex, sizeof ifindex);
  if (talk(fd, &r) < 0) {
    *msg = xasprintf("route to %s%s%s: %s", destination, gateway[0] ? " via " : "", gateway, strerror(errno));
    return -1;
  }
  return 0;
}
