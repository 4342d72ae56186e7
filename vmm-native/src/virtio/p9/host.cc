#include "host.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>

namespace stencil::p9 {

namespace {

constexpr long kProcSuperMagic = 0x9fa0;
constexpr size_t kXattrSizeMax = 64 * 1024;  // Linux XATTR_SIZE_MAX

// openat2(2), retried when the kernel reports a concurrent rename (EAGAIN) or a signal.
int OpenAt2(int dir_fd, const char* path, uint64_t flags, uint64_t mode, uint64_t resolve, UniqueFd* out) {
  open_how how{};
  how.flags = flags;
  how.mode = mode;
  how.resolve = resolve;
  for (int attempt = 0; attempt < 16; attempt++) {
    long fd = syscall(SYS_openat2, dir_fd, path, &how, sizeof how);
    if (fd >= 0) {
      out->reset(static_cast<int>(fd));
      return 0;
    }
    if (errno != EAGAIN && errno != EINTR) return errno;
  }
  return EAGAIN;
}

}  // namespace

HostRoot::HostRoot(UniqueFd root) : root_(std::move(root)) {
  struct stat st;
  if (fstat(root_.get(), &st) == 0) root_dev_ = st.st_dev;
  proc_fd_.reset(open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  struct statfs sfs;
  if (proc_fd_.valid() && (fstatfs(proc_fd_.get(), &sfs) != 0 || sfs.f_type != kProcSuperMagic)) proc_fd_.reset();
}

std::string HostRoot::ProcPath(int fd) const { return "/proc/self/fd/" + std::to_string(fd); }

int HostRoot::ResolveInRoot(const std::string& path, UniqueFd* out) const {
  return OpenAt2(root_.get(), path.empty() ? "." : path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC, 0,
                 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, out);
}

int HostRoot::LookupChild(int dir_fd, const std::string& name, UniqueFd* out) const {
  return OpenAt2(dir_fd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC, 0,
                 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, out);
}

int HostRoot::OpenChild(int dir_fd, const std::string& name, int flags, mode_t mode, UniqueFd* out) const {
  return OpenAt2(dir_fd, name.c_str(), static_cast<uint64_t>(flags | O_NOFOLLOW | O_CLOEXEC),
                 (flags & O_CREAT) ? (mode & 07777) : 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
                 out);
}

int HostRoot::Reopen(int fd, int flags, UniqueFd* out) const {
  if (!proc_fd_.valid()) return EOPNOTSUPP;
  std::string n = std::to_string(fd);
  for (;;) {
    int nfd = openat(proc_fd_.get(), n.c_str(), (flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL)) | O_CLOEXEC);
    if (nfd >= 0) {
      out->reset(nfd);
      return 0;
    }
    if (errno != EINTR) return errno;
  }
}

int HostRoot::Chmod(int fd, mode_t mode) const {
  if (!proc_fd_.valid()) return EOPNOTSUPP;
  return fchmodat(proc_fd_.get(), std::to_string(fd).c_str(), mode & 07777, 0) == 0 ? 0 : errno;
}

int HostRoot::Utimens(int fd, const struct timespec times[2]) const {
  if (utimensat(fd, "", times, AT_EMPTY_PATH) == 0) return 0;
  if (errno != EINVAL && errno != EBADF) return errno;
  // Kernels without AT_EMPTY_PATH for utimensat: go through the inode's /proc link.
  if (!proc_fd_.valid()) return EOPNOTSUPP;
  return utimensat(proc_fd_.get(), std::to_string(fd).c_str(), times, 0) == 0 ? 0 : errno;
}

int HostRoot::GetXattr(int fd, const std::string& name, std::string* value) const {
  std::string path = ProcPath(fd);
  for (int attempt = 0; attempt < 4; attempt++) {
    ssize_t size = getxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (size < 0) return errno;
    if (static_cast<size_t>(size) > kXattrSizeMax) return E2BIG;
    value->resize(static_cast<size_t>(size));
    ssize_t got = getxattr(path.c_str(), name.c_str(), value->data(), value->size());
    if (got >= 0) {
      value->resize(static_cast<size_t>(got));
      return 0;
    }
    if (errno != ERANGE) return errno;  // ERANGE: it grew between the calls
  }
  return ERANGE;
}

int HostRoot::ListXattr(int fd, std::string* names) const {
  std::string path = ProcPath(fd);
  for (int attempt = 0; attempt < 4; attempt++) {
    ssize_t size = listxattr(path.c_str(), nullptr, 0);
    if (size < 0) return errno;
    if (static_cast<size_t>(size) > kXattrSizeMax) return E2BIG;
    names->resize(static_cast<size_t>(size));
    ssize_t got = listxattr(path.c_str(), names->data(), names->size());
    if (got >= 0) {
      names->resize(static_cast<size_t>(got));
      return 0;
    }
    if (errno != ERANGE) return errno;
  }
  return ERANGE;
}

Qid HostRoot::QidOf(const struct stat& st) const {
  Qid q;
  q.type = S_ISDIR(st.st_mode) ? kQtDir : S_ISLNK(st.st_mode) ? kQtSymlink : kQtFile;
  q.version = 0;  // constant: Linux treats a changed version as a different inode
  q.path = st.st_ino;
  // Files on another filesystem mounted inside the share: fold the device into the top bits so
  // their inode numbers do not collide with the share's own.
  if (st.st_dev != root_dev_) q.path ^= (uint64_t(st.st_dev) * 0x9E3779B97F4A7C15ULL) & 0xffff000000000000ULL;
  return q;
}

int StatFd(int fd, struct stat* st) {
  return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

int HostOpenFlags(uint32_t f) {
  int flags = 0;
  switch (f & kDotlAccMode) {
    case kDotlRdonly: flags = O_RDONLY; break;
    case kDotlWronly: flags = O_WRONLY; break;
    case kDotlRdwr: flags = O_RDWR; break;
    default: flags = O_RDONLY; break;  // "no access" (3): the guest only wants ioctls; read-only is closest
  }
  if (f & kDotlTrunc) flags |= O_TRUNC;
  if (f & kDotlAppend) flags |= O_APPEND;
  if (f & kDotlDsync) flags |= O_DSYNC;
  if (f & kDotlSync) flags |= O_SYNC;
  if (f & kDotlDirectory) flags |= O_DIRECTORY;
  return flags;
}

uint64_t EncodeRdev(dev_t dev) {
  uint64_t ma = major(dev), mi = minor(dev);
  return (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & ~uint64_t(0xff)) << 12);
}

}  // namespace stencil::p9
