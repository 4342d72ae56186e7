// Linux ABI constants and structures the agent needs that musl's headers do not provide (musl
// ships no <linux/*.h>). Values are the kernel's stable user-space ABI.
#ifndef STENCIL_AGENT_LINUX_ABI_H
#define STENCIL_AGENT_LINUX_ABI_H

#include <sys/ioctl.h>
#include <sys/socket.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

#define VMADDR_CID_ANY 0xffffffffu
// <linux/vm_sockets.h>: on /dev/vsock, reads the local CID into an unsigned int.
#define STENCIL_IOCTL_VM_SOCKETS_GET_LOCAL_CID _IO(7, 0xb9)

// <linux/vm_sockets.h>
struct sockaddr_vm {
  sa_family_t svm_family;
  unsigned short svm_reserved1;
  unsigned int svm_port;
  unsigned int svm_cid;
  unsigned char svm_flags;
  unsigned char svm_zero[3];
};

// <linux/random.h>: RNDADDENTROPY = _IOW('R', 0x03, int[2]), argument struct rand_pool_info.
#define STENCIL_RNDADDENTROPY _IOW('R', 0x03, int[2])
#define STENCIL_RNDRESEEDCRNG _IO('R', 0x07)
struct stencil_rand_pool_info {
  int entropy_count;  // bits credited
  int buf_size;       // bytes in buf
  unsigned char buf[];
};

// <linux/magic.h>
#define STENCIL_CGROUP2_SUPER_MAGIC 0x63677270

// <linux/netlink.h> and <linux/rtnetlink.h>: what rtnl.c sends and reads.
#define STENCIL_NETLINK_ROUTE 0
struct sockaddr_nl {
  sa_family_t nl_family;
  unsigned short nl_pad;
  unsigned int nl_pid;
  unsigned int nl_groups;
};
struct nlmsghdr {
  unsigned int nlmsg_len;
  unsigned short nlmsg_type;
  unsigned short nlmsg_flags;
  unsigned int nlmsg_seq;
  unsigned int nlmsg_pid;
};
struct nlmsgerr {
  int error;
  struct nlmsghdr msg;
};
#define NLM_F_REQUEST 0x01
#define NLM_F_ACK 0x04
#define NLM_F_ROOT 0x100
#define NLM_F_MATCH 0x200
#define NLM_F_DUMP (NLM_F_ROOT | NLM_F_MATCH)
#define NLM_F_REPLACE 0x100
#define NLM_F_EXCL 0x200
#define NLM_F_CREATE 0x400
#define NLMSG_ERROR 0x2
#define NLMSG_DONE 0x3
#define NLMSG_ALIGNTO 4u
#define NLMSG_ALIGN(len) (((len) + NLMSG_ALIGNTO - 1) & ~(NLMSG_ALIGNTO - 1))
#define NLMSG_HDRLEN ((int)NLMSG_ALIGN(sizeof(struct nlmsghdr)))
#define NLMSG_LENGTH(len) ((len) + NLMSG_HDRLEN)
#define NLMSG_DATA(nlh) ((void *)(((char *)(nlh)) + NLMSG_HDRLEN))
#define NLMSG_NEXT(nlh, len) \
  ((len) -= NLMSG_ALIGN((nlh)->nlmsg_len), (struct nlmsghdr *)(((char *)(nlh)) + NLMSG_ALIGN((nlh)->nlmsg_len)))
#define NLMSG_OK(nlh, len)                                                                            \
  ((len) >= (size_t)sizeof(struct nlmsghdr) && (nlh)->nlmsg_len >= sizeof(struct nlmsghdr) && \
   (nlh)->nlmsg_len <= (len))
struct rtattr {
  unsigned short rta_len;
  unsigned short rta_type;
};
#define RTA_ALIGNTO 4u
#define RTA_ALIGN(len) (((len) + RTA_ALIGNTO - 1) & ~(RTA_ALIGNTO - 1))
#define RTA_OK(rta, len) \
  ((len) >= sizeof(struct rtattr) && (rta)->rta_len >= sizeof(struct rtattr) && (rta)->rta_len <= (len))
#define RTA_NEXT(rta, attrlen) \
  ((attrlen) -= RTA_ALIGN((rta)->rta_len), (struct rtattr *)(((char *)(rta)) + RTA_ALIGN((rta)->rta_len)))
#define RTA_LENGTH(len) (RTA_ALIGN(sizeof(struct rtattr)) + (len))
#define RTA_DATA(rta) ((void *)(((char *)(rta)) + RTA_LENGTH(0)))
#define RTA_PAYLOAD(rta) ((size_t)((rta)->rta_len) - RTA_LENGTH(0))
#define RTM_NEWADDR 20
#define RTM_DELADDR 21
#define RTM_GETADDR 22
#define RTM_NEWROUTE 24
struct ifaddrmsg {
  unsigned char ifa_family;
  unsigned char ifa_prefixlen;
  unsigned char ifa_flags;
  unsigned char ifa_scope;
  unsigned int ifa_index;
};
#define IFA_ADDRESS 1
#define IFA_LOCAL 2
#define IFA_RTA(r) ((struct rtattr *)(((char *)(r)) + NLMSG_ALIGN(sizeof(struct ifaddrmsg))))
#define IFA_PAYLOAD(n) ((size_t)(n)->nlmsg_len - NLMSG_LENGTH(sizeof(struct ifaddrmsg)))
struct rtmsg {
  unsigned char rtm_family;
  unsigned char rtm_dst_len;
  unsigned char rtm_src_len;
  unsigned char rtm_tos;
  unsigned char rtm_table;
  unsigned char rtm_protocol;
  unsigned char rtm_scope;
  unsigned char rtm_type;
  unsigned int rtm_flags;
};
#define RT_TABLE_MAIN 254
#define RTPROT_BOOT 3
#define RT_SCOPE_UNIVERSE 0
#define RT_SCOPE_LINK 253
#define RTN_UNICAST 1
#define RTA_DST 1
#define RTA_OIF 4
#define RTA_GATEWAY 5

#endif
