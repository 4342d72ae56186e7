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

#endif
