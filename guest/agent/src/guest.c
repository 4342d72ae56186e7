// Guest-wide setup: cgroup2 for crun at start-up, and the SetupGuest call (clock, hostname,
// entropy, mounts, network via net.c).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "linux_abi.h"

int mkdir_p(const char *path, mode_t mode) {
  char *p = xstrdup(path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, mode) < 0 && errno != EEXIST) {
      int e = errno;
      free(p);
      errno = e;
      return -1;
    }
    *s = '/';
  }
  int rc = mkdir(p, mode);
  int e = errno;
  free(p);
  if (rc < 0 && e != EEXIST) {
    errno = e;
    return -1;
  }
  return 0;
}

static void write_string(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t w = write(fd, text, strlen(text));
  (void)w;
  close(fd);
}

// Delegates every controller `dir` has to its child cgroups (cgroup.subtree_control), one at a
// time: a controller that cannot be enabled is skipped.
void cgroup_delegate(const char *dir) {
  char path[600], controllers[512], enable[600];
  snprintf(path, sizeof path, "%s/cgroup.controllers", dir);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, controllers, sizeof controllers - 1);
  close(fd);
  if (n <= 0) return;
  controllers[n] = 0;
  snprintf(path, sizeof path, "%s/cgroup.subtree_control", dir);
  char *save = NULL;
  for (char *name = strtok_r(controllers, " \n", &save); name; name = strtok_r(NULL, " \n", &save)) {
    snprintf(enable, sizeof enable, "+%s", name);
    write_string(path, enable);
  }
}

// crun needs cgroup v2 at /sys/fs/cgroup. /init mounts it; do it here too if it is missing, and
// delegate every controller to child cgroups so containers get memory/pids/cpu/io accounting.
void guest_init(void) {
  struct statfs sf;
  if (statfs(cfg.cgroup_root, &sf) < 0 || sf.f_type != STENCIL_CGROUP2_SUPER_MAGIC) {
    mkdir_p(cfg.cgroup_root, 0755);
    if (mount("cgroup2", cfg.cgroup_root, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
      log_msg(LOG_ERROR, "cannot mount cgroup2 on %s: %s", cfg.cgroup_root, strerror(errno));
    else
      log_msg(LOG_INFO, "mounted cgroup2 on %s", cfg.cgroup_root);
  }
  cgroup_delegate(cfg.cgroup_root);
}

static const struct {
  const char *name;
  unsigned long set, clear;
} mount_flags[] = {
    {"ro", MS_RDONLY, 0},          {"rw", 0, MS_RDONLY},
    {"nosuid", MS_NOSUID, 0},      {"suid", 0, MS_NOSUID},
    {"nodev", MS_NODEV, 0},        {"dev", 0, MS_NODEV},
    {"noexec", MS_NOEXEC, 0},      {"exec", 0, MS_NOEXEC},
    {"sync", MS_SYNCHRONOUS, 0},   {"async", 0, MS_SYNCHRONOUS},
    {"noatime", MS_NOATIME, 0},    {"atime", 0, MS_NOATIME},
    {"nodiratime", MS_NODIRATIME, 0}, {"relatime", MS_RELATIME, 0},
    {"strictatime", MS_STRICTATIME, 0}, {"bind", MS_BIND, 0},
    {"rbind", MS_BIND | MS_REC, 0}, {"defaults", 0, 0},
};

int mount_with_options(const char *source, const char *target, const char *fstype, char *const *options, size_t n) {
  unsigned long flags = 0;
  buf_t data = {0};
  for (size_t i = 0; i < n; i++) {
    bool known = false;
    for (size_t j = 0; j < sizeof mount_flags / sizeof mount_flags[0]; j++) {
      if (!strcmp(options[i], mount_flags[j].name)) {
        flags = (flags | mount_flags[j].set) & ~mount_flags[j].clear;
        known = true;
        break;
      }
    }
    if (known) continue;
    if (buf_pending(&data)) buf_put_u8(&data, ',');
    buf_append(&data, options[i], strlen(options[i]));
  }
  buf_put_u8(&data, 0);
  int rc = mount(source, target, fstype[0] ? fstype : NULL, flags, (const char *)buf_head(&data));
  int e = errno;
  // A read-only bind mount takes a second, remounting step.
  if (rc == 0 && (flags & MS_BIND) && (flags & MS_RDONLY)) {
    rc = mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | (flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)), NULL);
    e = errno;
  }
  buf_free(&data);
  errno = e;
  return rc;
}

int guest_setup(const struct request *req, char **msg) {
  if (req->time_ns > 0) {
    struct timespec ts = {.tv_sec = req->time_ns / 1000000000, .tv_nsec = req->time_ns % 1000000000};
    if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
      *msg = xasprintf("SetupGuest: clock_settime: %s", strerror(errno));
      return E_INTERNAL;
    }
  }
  if (req->hostname[0]) {
    if (strlen(req->hostname) > 64) {
      *msg = xasprintf("SetupGuest: hostname longer than 64 bytes");
      return E_INVALID_ARGUMENT;
    }
    if (sethostname(req->hostname, strlen(req->hostname)) < 0) {
      *msg = xasprintf("SetupGuest: sethostname: %s", strerror(errno));
      return E_INTERNAL;
    }
  }
  if (req->entropy_len) {
    if (req->entropy_len > 4096) {
      *msg = xasprintf("SetupGuest: %zu bytes of entropy; at most 4096", req->entropy_len);
      return E_INVALID_ARGUMENT;
    }
    struct stencil_rand_pool_info *info = xmalloc(sizeof *info + req->entropy_len);
    info->entropy_count = (int)(req->entropy_len * 8);
    info->buf_size = (int)req->entropy_len;
    memcpy(info->buf, req->entropy, req->entropy_len);
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : ioctl(fd, STENCIL_RNDADDENTROPY, info);
    // Credited entropy alone reaches the CRNG only at its next scheduled reseed (up to a minute
    // away): a VM cloned from a template would hand out the template's random stream until then.
    if (rc == 0) rc = ioctl(fd, STENCIL_RNDRESEEDCRNG);
    int e = errno;
    if (fd >= 0) close(fd);
    free(info);
    if (rc < 0) {
      *msg = xasprintf("SetupGuest: adding entropy (RNDADDENTROPY/RNDRESEEDCRNG): %s", strerror(e));
      return E_INTERNAL;
    }
  }
  for (size_t i = 0; i < req->n_mounts; i++) {
    const struct mount_req *m = &req->mounts[i];
    if (m->target[0] != '/') {
      *msg = xasprintf("SetupGuest: mount target \"%s\" is not an absolute path", m->target);
      return E_INVALID_ARGUMENT;
    }
    if (mkdir_p(m->target, 0755) < 0) {
      *msg = xasprintf("SetupGuest: cannot create %s: %s", m->target, strerror(errno));
      return E_INTERNAL;
    }
    if (mount_with_options(m->source, m->target, m->fstype, m->options, m->n_options) < 0) {
      *msg = xasprintf("SetupGuest: mount %s on %s (%s): %s", m->source, m->target, m->fstype, strerror(errno));
      return E_INTERNAL;
    }
    log_msg(LOG_INFO, "mounted %s on %s (%s)", m->source, m->target, m->fstype);
  }
  if (req->n_ifaces || req->n_routes) {
    int rc = guest_configure_network(req, msg);
    if (rc != E_OK) return rc;
  }
  return guest_apply_sysctls(req, msg);
}

uint32_t vsock_local_cid(void) {
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  unsigned int cid = 0;
  if (ioctl(fd, STENCIL_IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0) cid = 0;
  close(fd);
  return cid;
}
