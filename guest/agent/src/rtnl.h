// The agent's rtnetlink requests (rtnl.c). Each returns 0, or -1 with *msg naming what failed.
#ifndef STENCIL_AGENT_RTNL_H
#define STENCIL_AGENT_RTNL_H

// A NETLINK_ROUTE socket (close-on-exec), or -1 with errno.
int rtnl_open(void);
// Removes every address of interface `ifindex` (as `ip addr flush dev`).
int rtnl_flush_addresses(int fd, unsigned ifindex, char **msg);
// Adds "ADDR/LEN" (IPv4 or IPv6) to interface `ifindex`.
int rtnl_add_address(int fd, unsigned ifindex, const char *cidr, char **msg);
// Adds or replaces the main table's route to `destination` ("default" or a CIDR) via `gateway`
// ("" for none) on interface `ifindex` (0 for any).
int rtnl_replace_route(int fd, const char *destination, const char *gateway, unsigned ifindex, char **msg);

#endif
