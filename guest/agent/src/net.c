// The pod's network inside the guest: the virtio-net interface gets the MAC, MTU and addresses of
// the pod's veth on the host (CNI's), then the routes. The link settings are interface ioctls;
// addresses and routes are rtnetlink requests (rtnl.c). Every value is checked here first.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "container.h"
#include "rtnl.h"

static bool only(const char *s, const char *allowed, size_t max) {
  size_t n = strlen(s);
  return n > 0 && n <= max && s[0] != '-' && strspn(s, allowed) == n;
}
static bool valid_ifname(const char *s) { return only(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", 15); }
static bool valid_ip(const char *s) { return only(s, "0123456789abcdefABCDEF.:", 45); }
static bool valid_cidr(const char *s) { return only(s, "0123456789abcdefABCDEF.:/", 49) && strchr(s, '/'); }
static bool valid_mac(const char *s) {
  if (strlen(s) != 17) return false;
  for (int i = 0; i < 17; i++)
    if (i % 3 == 2 ? s[i] != ':' : !strchr("0123456789abcdefABCDEF", s[i]) || !s[i]) return false;
  return true;
}

// Interface ioctls on `name`: down, then MAC (if given) and MTU (if non-zero); or (up) only up.
// 0, or -1 with *msg.
static int set_link(const struct net_iface_req *it, bool up, char **msg) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *msg = xasprintf("socket for interface ioctls: %s", strerror(errno));
    return -1;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, it->name, IFNAMSIZ - 1);
  const char *step = "SIOCGIFFLAGS";
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) goto failed;
  if (up) {
    ifr.ifr_flags |= IFF_UP;
    step = "SIOCSIFFLAGS (up)";
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) goto failed;
    close(fd);
    return 0;
  }
  // A MAC change needs the interface down for some drivers; a clone's is up with the template's.
  ifr.ifr_flags &= ~IFF_UP;
  step = "SIOCSIFFLAGS (down)";
  if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) goto failed;
  if (it->mac[0]) {
    unsigned b[6];
    sscanf(it->mac, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]);
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    for (int i = 0; i < 6; i++) ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
    step = "SIOCSIFHWADDR";
    if (ioctl(fd, SIOCSIFHWADDR, &ifr) < 0) goto failed;
  }
  if (it->mtu) {
    ifr.ifr_mtu = (int)it->mtu;
    step = "SIOCSIFMTU";
    if (ioctl(fd, SIOCSIFMTU, &ifr) < 0) goto failed;
  }
  close(fd);
  return 0;
failed:
  *msg = xasprintf("%s: %s: %s", it->name, step, strerror(errno));
  close(fd);
  return -1;
}

int guest_configure_network(const struct request *req, char **msg) {
  char *why = NULL;
  for (size_t i = 0; i < req->n_ifaces; i++) {
    const struct net_iface_req *it = &req->ifaces[i];
    if (!valid_ifname(it->name)) {
      *msg = xasprintf("SetupGuest: interface name \"%s\" is not valid", it->name);
      return E_INVALID_ARGUMENT;
    }
    if (it->mac[0] && !valid_mac(it->mac)) {
      *msg = xasprintf("SetupGuest: %s: MAC \"%s\" is not valid (aa:bb:cc:dd:ee:ff)", it->name, it->mac);
      return E_INVALID_ARGUMENT;
    }
    for (size_t j = 0; j < it->n_addresses; j++)
      if (!valid_cidr(it->addresses[j])) {
        *msg = xasprintf("SetupGuest: %s: address \"%s\" is not in CIDR form", it->name, it->addresses[j]);
        return E_INVALID_ARGUMENT;
      }
    if (it->mtu && (it->mtu < 68 || it->mtu > 65535)) {
      *msg = xasprintf("SetupGuest: %s: MTU %u is out of range (68..65535)", it->name, it->mtu);
      return E_INVALID_ARGUMENT;
    }
  }
  for (size_t i = 0; i < req->n_routes; i++) {
    const struct route_req *rt = &req->routes[i];
    if (!(strcmp(rt->destination, "default") == 0 || valid_cidr(rt->destination)) ||
        (rt->gateway[0] && !valid_ip(rt->gateway)) || (rt->device[0] && !valid_ifname(rt->device))) {
      *msg = xasprintf("SetupGuest: route to \"%s\" via \"%s\" dev \"%s\" is not valid", rt->destination, rt->gateway,
                       rt->device);
      return E_INVALID_ARGUMENT;
    }
  }

  int fd = rtnl_open();
  if (fd < 0) {
    *msg = xasprintf("SetupGuest: network: a NETLINK_ROUTE socket: %s", strerror(errno));
    return E_INTERNAL;
  }
  for (size_t i = 0; i < req->n_ifaces; i++) {
    const struct net_iface_req *it = &req->ifaces[i];
    unsigned index = if_nametoindex(it->name);
    if (!index) {
      why = xasprintf("%s: %s", it->name, strerror(errno));
      goto failed;
    }
    if (set_link(it, false, &why) < 0 || rtnl_flush_addresses(fd, index, &why) < 0) goto failed;
    for (size_t j = 0; j < it->n_addresses; j++)
      if (rtnl_add_address(fd, index, it->addresses[j], &why) < 0) goto failed;
    if (set_link(it, true, &why) < 0) goto failed;
    log_msg(LOG_INFO, "network: %s mac %s mtu %u, %zu address(es)", it->name, it->mac[0] ? it->mac : "(kept)", it->mtu,
            it->n_addresses);
  }
  for (size_t i = 0; i < req->n_routes; i++) {
    const struct route_req *rt = &req->routes[i];
    unsigned index = rt->device[0] ? if_nametoindex(rt->device) : 0;
    if (rt->device[0] && !index) {
      why = xasprintf("route to %s: device %s: %s", rt->destination, rt->device, strerror(errno));
      goto failed;
    }
    if (rtnl_replace_route(fd, rt->destination, rt->gateway, index, &why) < 0) goto failed;
  }
  close(fd);
  return E_OK;
failed:
  close(fd);
  *msg = xasprintf("SetupGuest: network: %s", why);
  free(why);
  return E_INTERNAL;
}

// The /proc/sys path of a net.* sysctl key: dots separate the levels (net.ipv4.ip_forward), unless
// the key has slashes, which then do, as in sysctl(8) (net/ipv4/conf/eth0.100/rp_filter). NULL
// when the key is not a plain net.* name: no empty, "." or ".." level, nothing but [A-Za-z0-9_.-/].
static char *sysctl_path(const char *key) {
  if (!only(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/", 200)) return NULL;
  const bool slashes = strchr(key, '/') != NULL;
  if (strncmp(key, slashes ? "net/" : "net.", 4) != 0) return NULL;
  char *path = xasprintf("/proc/sys/%s", key);
  char *rel = path + strlen("/proc/sys/");
  if (!slashes)
    for (char *c = rel; *c; c++)
      if (*c == '.') *c = '/';
  for (char *level = rel; level;) {
    char *end = strchr(level, '/');
    size_t n = end ? (size_t)(end - level) : strlen(level);
    if (n == 0 || (n == 1 && level[0] == '.') || (n == 2 && level[0] == '.' && level[1] == '.')) {
      free(path);
      return NULL;
    }
    level = end ? end + 1 : NULL;
  }
  return path;
}

int guest_apply_sysctls(const struct request *req, char **msg) {
  for (size_t i = 0; i < req->n_sysctls; i++) {
    const char *key = req->sysctl_keys[i], *value = req->sysctl_values[i];
    char *path = sysctl_path(key);
    if (!path) {
      *msg = xasprintf("SetupGuest: sysctl \"%s\" is not a net.* key", key);
      return E_INVALID_ARGUMENT;
    }
    if (strlen(value) > 256 || strpbrk(value, "\n\r")) {
      free(path);
      *msg = xasprintf("SetupGuest: sysctl %s: the value is longer than 256 bytes or has a line break", key);
      return E_INVALID_ARGUMENT;
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t wrote = fd < 0 ? -1 : write(fd, value, strlen(value));
    int e = errno;
    if (fd >= 0) close(fd);
    free(path);
    if (wrote < 0) {
      *msg = xasprintf("SetupGuest: sysctl %s = \"%s\": %s", key, value, strerror(e));
      return e == ENOENT ? E_INVALID_ARGUMENT : E_INTERNAL;
    }
    log_msg(LOG_INFO, "sysctl %s = %s", key, value);
  }
  return E_OK;
}
