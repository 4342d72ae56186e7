// Host filesystem access for the 9P server, confined to one shared directory.
//
// Containment rules (what keeps a guest inside its share):
//   - every fid holds an O_PATH fd, obtained only through LookupChild (one validated name under a
//     directory fd, symlinks never followed, RESOLVE_BENEATH) or ResolveInRoot (a root-relative
//     path resolved with RESOLVE_IN_ROOT, so "..", absolute and relative symlinks all stay inside);
//   - opening for I/O re-opens the fid's own inode through /proc/self/fd (never a path walk);
//   - operations on a final component (chown, utimens, unlink, rename, link, mkdir, ...) use *at
//     calls on a directory fd with the name, or AT_EMPTY_PATH on the fid's fd, and never follow a
//     final symlink.
#pragma once
#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "../../fd.h"
#include "wire.h"

namespace stencil::p9 {

class HostRoot {
 public:
  // Takes ownership of a directory fd (O_PATH is enough). Opens /proc/self/fd for re-opens.
  explicit HostRoot(UniqueFd root);
  int root_fd() const { return root_.get(); }
  dev_t root_dev() const { return root_dev_; }

  // O_PATH|O_NOFOLLOW fd for `path` (relative to the root, "" = the root itself) with
  // RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS. Returns 0 or an errno.
  int ResolveInRoot(const std::string& path, UniqueFd* out) const;
  // O_PATH|O_NOFOLLOW fd for one entry `name` (already validated: no '/', not "." or "..")
  // of the directory `dir_fd`. A symlink is returned as itself.
  int LookupChild(int dir_fd, const std::string& name, UniqueFd* out) const;
  // Opens `name` in `dir_fd` with open(2) `flags` (O_CREAT allowed) without following symlinks
  // anywhere. Returns 0 or an errno.
  int OpenChild(int dir_fd, const std::string& name, int flags, mode_t mode, UniqueFd* out) const;
  // A new fd for the inode behind `fd` (an O_PATH fd) opened with `flags`, via /proc/self/fd.
  int Reopen(int fd, int flags, UniqueFd* out) const;
  // chmod of the inode behind an O_PATH fd (not a symlink).
  int Chmod(int fd, mode_t mode) const;
  // utimensat of the inode behind an O_PATH fd, symlinks included.
  int Utimens(int fd, const struct timespec times[2]) const;
  // getxattr/listxattr of the inode behind an O_PATH fd (regular files and directories).
  int GetXattr(int fd, const std::string& name, std::string* value) const;
  int ListXattr(int fd, std::string* names) const;

  Qid QidOf(const struct stat& st) const;

 private:
  std::string ProcPath(int fd) const;
  UniqueFd root_;
  UniqueFd proc_fd_;  // /proc/self/fd, or invalid if /proc is not mounted
  dev_t root_dev_ = 0;
};

// fstatat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW); 0 or errno.
int StatFd(int fd, struct stat* st);
// 9P2000.L open flags -> host open(2) flags (access mode, TRUNC, APPEND, DSYNC, SYNC, DIRECTORY;
// CREATE/EXCL are left to the caller; NOCTTY, FASYNC, DIRECT, NOATIME, NOFOLLOW are dropped).
int HostOpenFlags(uint32_t dotl_flags);
// Linux new_encode_dev() form of a device number, as Rgetattr carries it.
uint64_t EncodeRdev(dev_t dev);

}  // namespace stencil::p9
