// Namespace operations (create, mkdir, symlink, mknod, link, rename, unlink, remove), attributes
// (getattr, setattr, statfs), extended attributes and locks.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>

#include "server.h"

namespace stencil::p9 {

namespace {

constexpr size_t kSymlinkMax = 4095;

bool IsUserXattr(const std::string& name) { return name.compare(0, 5, "user.") == 0; }

}  // namespace

int Server::FinishCreate(int dir_fd, const std::string& name, int fd, uint32_t uid, uint32_t gid, long mode,
                         bool is_dir) {
  // chown first: it clears set-id bits, which the chmod then sets exactly as asked.
  int err = fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
  if (!err && mode >= 0) err = host_.Chmod(fd, static_cast<mode_t>(mode));
  if (err) unlinkat(dir_fd, name.c_str(), is_dir ? AT_REMOVEDIR : 0);
  return err;
}

int Server::Lcreate(Reader& r, Writer& w) {
  uint32_t fid = r.U32();
  std::string name = r.Name();
  uint32_t flags = r.U32(), mode = r.U32(), gid = r.U32();
  Fid* f = Get(fid);
  if (!f) return EBADF;
  if (f->open_fd.valid()) return EINVAL;
  if (options_.read_only) return EROFS;
  int dir = f->path_fd.get();
  int host_flags = HostOpenFlags(flags) & ~O_DIRECTORY;
  UniqueFd fd;
  int err = host_.OpenChild(dir, name, host_flags | O_CREAT | O_EXCL, mode, &fd);
  if (!err) {
    err = FinishCreate(dir, name, fd.get(), f->uid, gid, mode & 07777, false);
  } else if (err == EEXIST && !(flags & kDotlExcl)) {
    // Open the existing file, but only a regular one: opening a host FIFO or device could block
    // or have side effects.
    UniqueFd existing;
    struct stat st;
    err = host_.LookupChild(dir, name, &existing);
    if (!err) err = StatFd(existing.get(), &st);
    if (!err) err = S_ISDIR(st.st_mode) ? EISDIR : S_ISLNK(st.st_mode) ? ELOOP : !S_ISREG(st.st_mode) ? EOPNOTSUPP : 0;
    if (!err) err = host_.Reopen(existing.get(), host_flags, &fd);
  }
  if (err) return err;
  UniqueFd path_fd;
  struct stat st;
  if ((err = host_.Reopen(fd.get(), O_PATH, &path_fd)) || (err = StatFd(fd.get(), &st))) return err;
  f->path_fd = std::move(path_fd);
  f->path = Join(f->path, name);
  f->open_fd = std::move(fd);
  f->open_flags = flags;
  w.WriteQid(host_.QidOf(st));
  w.U32(0);
  return 0;
}

int Server::Mkdir(Reader& r, Writer& w) {
  uint32_t dfid = r.U32();
  std::string name = r.Name();
  uint32_t mode = r.U32(), gid = r.U32();
  Fid* d = Get(dfid);
  if (!d) return EBADF;
  if (options_.read_only) return EROFS;
  int dir = d->path_fd.get();
  if (mkdirat(dir, name.c_str(), mode & 07777) != 0) return errno;
  UniqueFd fd;
  struct stat st;
  int err = host_.LookupChild(dir, name, &fd);
  if (!err) err = FinishCreate(dir, name, fd.get(), d->uid, gid, mode & 07777, true);
  if (!err) err = StatFd(fd.get(), &st);
  if (err) return err;
  w.WriteQid(host_.QidOf(st));
  return 0;
}

int Server::Symlink(Reader& r, Writer& w) {
  uint32_t dfid = r.U32();
  std::string name = r.Name();
  std::string target = r.Str();
  uint32_t gid = r.U32();
  if (target.empty()) return ENOENT;
  if (target.find('\0') != std::string::npos) return EINVAL;
  if (target.size() > kSymlinkMax) return ENAMETOOLONG;
  Fid* d = Get(dfid);
  if (!d) return EBADF;
  if (options_.read_only) return EROFS;
  int dir = d->path_fd.get();
  // The target is stored verbatim: it is only ever followed by the guest, or by the server
  // inside the share (RESOLVE_IN_ROOT).
  if (symlinkat(target.c_str(), dir, name.c_str()) != 0) return errno;
  UniqueFd fd;
  struct stat st;
  int err = host_.LookupChild(dir, name, &fd);
  if (!err) err = FinishCreate(dir, name, fd.get(), d->uid, gid, -1, false);
  if (!err) err = StatFd(fd.get(), &st);
  if (err) return err;
  w.WriteQid(host_.QidOf(st));
  return 0;
}

int Server::Mknod(Reader& r, Writer& w) {
  uint32_t dfid = r.U32();
  std::string name = r.Name();
  uint32_t mode = r.U32(), major_no = r.U32(), minor_no = r.U32(), gid = r.U32();
  Fid* d = Get(dfid);
  if (!d) return EBADF;
  if (options_.read_only) return EROFS;
  mode_t type = mode & S_IFMT;
  if (type == 0) type = S_IFREG;
  if (type != S_IFREG && type != S_IFCHR && type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK) return EINVAL;
  int dir = d->path_fd.get();
  if (mknodat(dir, name.c_str(), type | (mode & 07777), makedev(major_no, minor_no)) != 0) return errno;
  UniqueFd fd;
  struct stat st;
  int err = host_.LookupChild(dir, name, &fd);
  if (!err) err = FinishCreate(dir, name, fd.get(), d->uid, gid, mode & 07777, false);
  if (!err) err = StatFd(fd.get(), &st);
  if (err) return err;
  w.WriteQid(host_.QidOf(st));
  return 0;
}

int Server::Link(Reader& r, Writer&) {
  uint32_t dfid = r.U32(), fid = r.U32();
  std::string name = r.Name();
  Fid* d = Get(dfid);
  Fid* f = Get(fid);
  if (!d || !f) return EBADF;
  if (options_.read_only) return EROFS;
  if (linkat(f->path_fd.get(), "", d->path_fd.get(), name.c_str(), AT_EMPTY_PATH) == 0) return 0;
  if (errno != ENOENT) return errno;
  // Without CAP_DAC_READ_SEARCH AT_EMPTY_PATH answers ENOENT: link through the /proc link.
  std::string proc = "/proc/self/fd/" + std::to_string(f->path_fd.get());
  return linkat(AT_FDCWD, proc.c_str(), d->path_fd.get(), name.c_str(), AT_SYMLINK_FOLLOW) == 0 ? 0 : errno;
}

int Server::Readlink(Reader& r, Writer& w, size_t max_reply) {
  Fid* f = Get(r.U32());
  if (!f) return EBADF;
  char buf[kSymlinkMax + 1];
  ssize_t n = readlinkat(f->path_fd.get(), "", buf, sizeof buf);
  if (n < 0) return errno;
  if (static_cast<size_t>(n) > kSymlinkMax || kHeaderSize + 2 + static_cast<size_t>(n) > max_reply)
    return ENAMETOOLONG;
  w.Str(std::string(buf, static_cast<size_t>(n)));
  return 0;
}

int Server::Rename(Reader& r, Writer&) {
  uint32_t fid = r.U32(), dfid = r.U32();
  std::string name = r.Name();
  Fid* f = Get(fid);
  Fid* d = Get(dfid);
  if (!f || !d) return EBADF;
  if (options_.read_only) return EROFS;
  UniqueFd parent;
  std::string old_name;
  if (int err = ParentOf(*f, &parent, &old_name)) return err;
  if (renameat(parent.get(), old_name.c_str(), d->path_fd.get(), name.c_str()) != 0) return errno;
  RenamePaths(f->path, Join(d->path, name));
  return 0;
}

int Server::Renameat(Reader& r, Writer&) {
  uint32_t olddirfid = r.U32();
  std::string oldname = r.Name();
  uint32_t newdirfid = r.U32();
  std::string newname = r.Name();
  Fid* od = Get(olddirfid);
  Fid* nd = Get(newdirfid);
  if (!od || !nd) return EBADF;
  if (options_.read_only) return EROFS;
  if (renameat(od->path_fd.get(), oldname.c_str(), nd->path_fd.get(), newname.c_str()) != 0) return errno;
  RenamePaths(Join(od->path, oldname), Join(nd->path, newname));
  return 0;
}

int Server::Unlinkat(Reader& r, Writer&) {
  uint32_t dfid = r.U32();
  std::string name = r.Name();
  uint32_t flags = r.U32();
  Fid* d = Get(dfid);
  if (!d) return EBADF;
  if (options_.read_only) return EROFS;
  int host_flags = (flags & kDotlAtRemovedir) ? AT_REMOVEDIR : 0;
  return unlinkat(d->path_fd.get(), name.c_str(), host_flags) == 0 ? 0 : errno;
}

int Server::Remove(Reader& r, Writer&) {
  uint32_t fid = r.U32();
  Fid* f = Get(fid, /*allow_xattr=*/true);
  if (!f) return EBADF;
  int err = 0;
  if (f->is_xattr) err = EINVAL;
  else if (options_.read_only) err = EROFS;
  UniqueFd parent;
  std::string name;
  struct stat st;
  if (!err) err = ParentOf(*f, &parent, &name);
  if (!err) err = StatFd(f->path_fd.get(), &st);
  if (!err && unlinkat(parent.get(), name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0) err = errno;
  fids_.erase(fid);  // Tremove clunks the fid whether or not the removal worked
  return err;
}

int Server::Getattr(Reader& r, Writer& w) {
  uint32_t fid = r.U32();
  r.U64();  // request_mask: everything basic is always returned
  Fid* f = Get(fid);
  if (!f) return EBADF;
  struct stat st;
  if (int err = StatFd(f->path_fd.get(), &st)) return err;
  w.U64(kGetattrBasic);
  w.WriteQid(host_.QidOf(st));
  w.U32(st.st_mode);
  w.U32(st.st_uid);
  w.U32(st.st_gid);
  w.U64(st.st_nlink);
  w.U64(EncodeRdev(st.st_rdev));
  w.U64(static_cast<uint64_t>(st.st_size));
  w.U64(static_cast<uint64_t>(st.st_blksize));
  w.U64(static_cast<uint64_t>(st.st_blocks));
  w.U64(static_cast<uint64_t>(st.st_atim.tv_sec));
  w.U64(static_cast<uint64_t>(st.st_atim.tv_nsec));
  w.U64(static_cast<uint64_t>(st.st_mtim.tv_sec));
  w.U64(static_cast<uint64_t>(st.st_mtim.tv_nsec));
  w.U64(static_cast<uint64_t>(st.st_ctim.tv_sec));
  w.U64(static_cast<uint64_t>(st.st_ctim.tv_nsec));
  for (int i = 0; i < 4; i++) w.U64(0);  // btime sec/nsec, gen, data_version: not provided
  return 0;
}

int Server::Setattr(Reader& r, Writer&) {
  uint32_t fid = r.U32(), valid = r.U32(), mode = r.U32(), uid = r.U32(), gid = r.U32();
  uint64_t size = r.U64();
  uint64_t atime_sec = r.U64(), atime_nsec = r.U64(), mtime_sec = r.U64(), mtime_nsec = r.U64();
  Fid* f = Get(fid);
  if (!f) return EBADF;
  constexpr uint32_t kChanges = kSetattrMode | kSetattrUid | kSetattrGid | kSetattrSize | kSetattrAtime | kSetattrMtime;
  if (!(valid & kChanges)) return 0;  // CTIME alone: any change updates it anyway
  if (options_.read_only) return EROFS;
  int fd = f->path_fd.get();
  struct stat st;
  if (int err = StatFd(fd, &st)) return err;

  if (valid & (kSetattrUid | kSetattrGid)) {  // before the mode: chown clears set-id bits
    uid_t u = (valid & kSetattrUid) ? uid : static_cast<uid_t>(-1);
    gid_t g = (valid & kSetattrGid) ? gid : static_cast<gid_t>(-1);
    if (fchownat(fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  }
  if (valid & kSetattrMode) {
    if (S_ISLNK(st.st_mode)) return EOPNOTSUPP;  // like lchmod: symlink modes do not exist
    if (int err = host_.Chmod(fd, mode & 07777)) return err;
  }
  if (valid & kSetattrSize) {
    if (S_ISDIR(st.st_mode)) return EISDIR;
    if (!S_ISREG(st.st_mode)) return EINVAL;
    if (size > static_cast<uint64_t>(INT64_MAX)) return EFBIG;
    uint32_t acc = f->open_flags & kDotlAccMode;
    UniqueFd tmp;
    int wfd = f->open_fd.get();
    if (!f->open_fd.valid() || (acc != kDotlWronly && acc != kDotlRdwr)) {
      if (int err = host_.Reopen(fd, O_WRONLY, &tmp)) return err;
      wfd = tmp.get();
    }
    if (ftruncate(wfd, static_cast<off_t>(size)) != 0) return errno;
  }
  if (valid & (kSetattrAtime | kSetattrMtime)) {
    if (((valid & kSetattrAtimeSet) && atime_nsec >= 1000000000) ||
        ((valid & kSetattrMtimeSet) && mtime_nsec >= 1000000000))
      return EINVAL;
    struct timespec ts[2];
    ts[0].tv_sec = static_cast<time_t>(atime_sec), ts[0].tv_nsec = static_cast<long>(atime_nsec);
    ts[1].tv_sec = static_cast<time_t>(mtime_sec), ts[1].tv_nsec = static_cast<long>(mtime_nsec);
    if (!(valid & kSetattrAtime)) ts[0].tv_nsec = UTIME_OMIT;
    else if (!(valid & kSetattrAtimeSet)) ts[0].tv_nsec = UTIME_NOW;
    if (!(valid & kSetattrMtime)) ts[1].tv_nsec = UTIME_OMIT;
    else if (!(valid & kSetattrMtimeSet)) ts[1].tv_nsec = UTIME_NOW;
    if (int err = host_.Utimens(fd, ts)) return err;
  }
  return 0;
}

int Server::Statfs(Reader& r, Writer& w) {
  Fid* f = Get(r.U32());
  if (!f) return EBADF;
  struct statfs s;
  if (fstatfs(f->path_fd.get(), &s) != 0) return errno;
  uint64_t fsid = uint64_t(static_cast<uint32_t>(s.f_fsid.__val[0])) |
                  uint64_t(static_cast<uint32_t>(s.f_fsid.__val[1])) << 32;
  w.U32(static_cast<uint32_t>(s.f_type));
  w.U32(static_cast<uint32_t>(s.f_bsize));
  w.U64(s.f_blocks);
  w.U64(s.f_bfree);
  w.U64(s.f_bavail);
  w.U64(s.f_files);
  w.U64(s.f_ffree);
  w.U64(fsid);
  w.U32(static_cast<uint32_t>(s.f_namelen));
  return 0;
}

int Server::Xattrwalk(Reader& r, Writer& w) {
  uint32_t fid = r.U32(), newfid = r.U32();
  std::string name = r.Str();  // empty: list the names
  if (name.size() > 255 || name.find('\0') != std::string::npos) return EINVAL;
  Fid* f = Get(fid);
  if (!f) return EBADF;
  if (newfid != fid && fids_.count(newfid)) return EEXIST;
  if (!name.empty() && !IsUserXattr(name)) return EOPNOTSUPP;
  struct stat st;
  if (int err = StatFd(f->path_fd.get(), &st)) return err;
  // Only regular files and directories carry user.* attributes; never touch special files.
  bool has_xattrs = S_ISREG(st.st_mode) || S_ISDIR(st.st_mode);
  std::string data;
  if (name.empty()) {
    std::string all;
    if (has_xattrs)
      if (int err = host_.ListXattr(f->path_fd.get(), &all)) return err;
    for (size_t pos = 0; pos < all.size();) {
      size_t end = all.find('\0', pos);
      if (end == std::string::npos) end = all.size();
      std::string one = all.substr(pos, end - pos);
      if (IsUserXattr(one)) data += one + '\0';
      pos = end + 1;
    }
  } else {
    if (!has_xattrs) return ENODATA;
    if (int err = host_.GetXattr(f->path_fd.get(), name, &data)) return err;
  }
  auto nf = std::make_unique<Fid>();
  nf->path = f->path;
  nf->uid = f->uid;
  nf->is_xattr = true;
  nf->xattr_data = std::move(data);
  uint64_t size = nf->xattr_data.size();
  if (newfid == fid) fids_[fid] = std::move(nf);
  else if (int err = Install(newfid, std::move(nf))) return err;
  w.U64(size);
  return 0;
}

int Server::Lock(Reader& r, Writer& w) {
  uint32_t fid = r.U32();
  uint8_t type = r.U8();
  r.U32();  // flags (BLOCK / RECLAIM)
  r.U64();  // start
  r.U64();  // length
  r.U32();  // proc_id
  r.Str();  // client_id
  if (type > kLockTypeUnlck) return EINVAL;
  if (!Get(fid)) return EBADF;
  w.U8(kLockSuccess);  // always granted: the guest kernel arbitrates between its own processes
  return 0;
}

int Server::Getlock(Reader& r, Writer& w) {
  uint32_t fid = r.U32();
  uint8_t type = r.U8();
  uint64_t start = r.U64(), length = r.U64();
  uint32_t proc_id = r.U32();
  std::string client_id = r.Str();
  if (type > kLockTypeUnlck) return EINVAL;
  if (!Get(fid)) return EBADF;
  w.U8(kLockTypeUnlck);  // no conflicting lock
  w.U64(start);
  w.U64(length);
  w.U32(proc_id);
  w.Str(client_id);
  return 0;
}

}  // namespace stencil::p9
