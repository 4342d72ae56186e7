// Session handling (version, attach, walk, clunk), file I/O (lopen, read, write, readdir, fsync)
// and state save/restore. Namespace and attribute operations are in ops.cc.
#include "server.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>

namespace stencil::p9 {

namespace {

constexpr uint32_t kNobody = 65534;

// The getdents64(2) record.
struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  uint16_t d_reclen;
  uint8_t d_type;
  char d_name[];
};

uint8_t QidTypeOfDirent(uint8_t d_type) {
  return d_type == DT_DIR ? kQtDir : d_type == DT_LNK ? kQtSymlink : kQtFile;
}

int DupFd(int fd, UniqueFd* out) {
  int n = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (n < 0) return errno;
  out->reset(n);
  return 0;
}

bool OpenForWriting(uint32_t dotl_flags) {
  uint32_t acc = dotl_flags & kDotlAccMode;
  return acc == kDotlWronly || acc == kDotlRdwr || (dotl_flags & kDotlTrunc);
}

}  // namespace

Server::Server(UniqueFd root, ServerOptions options)
    : host_(std::move(root)), options_(options), msize_(options.max_msize) {}

Server::~Server() = default;

std::string Server::Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

Server::Fid* Server::Get(uint32_t fid, bool allow_xattr) {
  auto it = fids_.find(fid);
  if (it == fids_.end() || (it->second->is_xattr && !allow_xattr)) return nullptr;
  return it->second.get();
}

int Server::Install(uint32_t fid, std::unique_ptr<Fid> f) {
  if (fid == kNoFid) return EBADF;
  if (fids_.count(fid)) return EEXIST;
  if (fids_.size() >= options_.max_fids) return EMFILE;
  fids_.emplace(fid, std::move(f));
  return 0;
}

int Server::ParentOf(const Fid& f, UniqueFd* dir, std::string* name) {
  if (f.path.empty()) return EBUSY;  // the share root has no parent inside the share
  size_t slash = f.path.rfind('/');
  std::string parent = slash == std::string::npos ? std::string() : f.path.substr(0, slash);
  *name = slash == std::string::npos ? f.path : f.path.substr(slash + 1);
  return host_.ResolveInRoot(parent, dir);
}

void Server::RenamePaths(const std::string& from, const std::string& to) {
  for (auto& [id, f] : fids_) {
    if (f->path == from) {
      f->path = to;
    } else if (f->path.size() > from.size() && f->path.compare(0, from.size(), from) == 0 &&
               f->path[from.size()] == '/') {
      f->path = to + f->path.substr(from.size());
    }
  }
}

void Server::Reset() {
  fids_.clear();
  negotiated_ = false;
  msize_ = options_.max_msize;
}

std::vector<uint8_t> Server::Handle(const uint8_t* msg, size_t len, size_t max_reply) {
  if (len < kHeaderSize) return EncodeLerror(kNoTag, EPROTO);
  Reader header(msg, len);
  uint32_t size = header.U32();
  uint8_t type = header.U8();
  uint16_t tag = header.U16();
  if (size < kHeaderSize || size > len) return EncodeLerror(tag, EPROTO);
  if (size > msize_) return EncodeLerror(tag, EMSGSIZE);
  max_reply = std::min<size_t>(max_reply, msize_);

  std::vector<uint8_t> out;
  int err;
  try {
    Reader r(msg + kHeaderSize, size - kHeaderSize);
    Writer w(out);
    w.Begin(static_cast<uint8_t>(type + 1), tag);
    if (!negotiated_ && type != kTversion) {
      err = EPROTO;
    } else {
      err = Dispatch(type, r, w, max_reply);
    }
    if (!err) w.Finish();
  } catch (const ProtocolError& e) {
    err = e.err;
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  } catch (const std::exception&) {
    err = EIO;
  }
  if (!err && out.size() > max_reply) err = ENOBUFS;  // only fixed-size replies can get here
  if (err) return EncodeLerror(tag, static_cast<uint32_t>(err));
  return out;
}

int Server::Dispatch(uint8_t type, Reader& r, Writer& w, size_t max_reply) {
  switch (type) {
    case kTversion: return Version(r, w);
    case kTattach: return Attach(r, w);
    case kTwalk: return Walk(r, w);
    case kTclunk: return Clunk(r, w);
    case kTflush: r.U16(); return 0;  // requests run to completion in order: nothing to cancel
    case kTlopen: return Lopen(r, w);
    case kTread: return Read(r, w, max_reply);
    case kTwrite: return Write(r, w);
    case kTreaddir: return Readdir(r, w, max_reply);
    case kTfsync: return Fsync(r, w);
    case kTlcreate: return Lcreate(r, w);
    case kTmkdir: return Mkdir(r, w);
    case kTsymlink: return Symlink(r, w);
    case kTmknod: return Mknod(r, w);
    case kTlink: return Link(r, w);
    case kTreadlink: return Readlink(r, w, max_reply);
    case kTrename: return Rename(r, w);
    case kTrenameat: return Renameat(r, w);
    case kTunlinkat: return Unlinkat(r, w);
    case kTremove: return Remove(r, w);
    case kTgetattr: return Getattr(r, w);
    case kTsetattr: return Setattr(r, w);
    case kTstatfs: return Statfs(r, w);
    case kTxattrwalk: return Xattrwalk(r, w);
    case kTxattrcreate: return options_.read_only ? EROFS : EOPNOTSUPP;
    case kTlock: return Lock(r, w);
    case kTgetlock: return Getlock(r, w);
    case kTauth: return EOPNOTSUPP;  // no authentication: Tattach takes afid = NOFID
    default: return EOPNOTSUPP;      // includes the legacy 9P2000 / 9P2000.u messages
  }
}

int Server::Version(Reader& r, Writer& w) {
  uint32_t msize = r.U32();
  std::string version = r.Str();
  Reset();  // a Tversion aborts the previous session
  if (msize < kMinMsize) return EINVAL;
  msize_ = std::min(msize, options_.max_msize);
  negotiated_ = version == "9P2000.L";
  w.U32(msize_);
  w.Str(negotiated_ ? "9P2000.L" : "unknown");
  return 0;
}

int Server::Attach(Reader& r, Writer& w) {
  uint32_t fid = r.U32();
  r.U32();  // afid: authentication is not used
  r.Str();  // uname: n_uname is what counts in 9P2000.L
  std::string aname = r.Str();
  uint32_t n_uname = r.U32();
  if (aname.find('\0') != std::string::npos) return EINVAL;
  if (fids_.count(fid)) return EEXIST;

  // aname selects a directory inside the share ("" or "/" = the share itself).
  std::string path;
  size_t pos = 0;
  while (pos <= aname.size()) {
    size_t end = aname.find('/', pos);
    if (end == std::string::npos) end = aname.size();
    std::string part = aname.substr(pos, end - pos);
    if (part == "..") {
      size_t slash = path.rfind('/');
      path = slash == std::string::npos ? std::string() : path.substr(0, slash);
    } else if (!part.empty() && part != ".") {
      path = Join(path, part);
    }
    pos = end + 1;
  }
  auto f = std::make_unique<Fid>();
  if (int err = host_.ResolveInRoot(path, &f->path_fd)) return err;
  struct stat st;
  if (int err = StatFd(f->path_fd.get(), &st)) return err;
  if (!S_ISDIR(st.st_mode)) return ENOTDIR;
  f->path = path;
  f->uid = n_uname == kNoUid ? kNobody : n_uname;
  if (int err = Install(fid, std::move(f))) return err;
  w.WriteQid(host_.QidOf(st));
  return 0;
}

int Server::Walk(Reader& r, Writer& w) {
  uint32_t fid = r.U32(), newfid = r.U32();
  uint16_t count = r.U16();
  if (count > kMaxWalkNames) return EINVAL;
  std::vector<std::string> names;
  for (uint16_t i = 0; i < count; i++) names.push_back(r.Name(/*allow_dots=*/true));
  Fid* f = Get(fid);
  if (!f) return EBADF;
  if (newfid != fid && fids_.count(newfid)) return EEXIST;

  UniqueFd cur;
  int cur_fd = f->path_fd.get();
  std::string path = f->path;
  std::vector<Qid> qids;
  for (const std::string& name : names) {
    UniqueFd next;
    std::string next_path;
    int err;
    if (name == ".") {
      next_path = path;
      err = DupFd(cur_fd, &next);
    } else if (name == "..") {  // lexical: the fid paths are the guest's view (no symlinks in them)
      size_t slash = path.rfind('/');
      next_path = slash == std::string::npos ? std::string() : path.substr(0, slash);
      err = host_.ResolveInRoot(next_path, &next);
    } else {
      next_path = Join(path, name);
      err = host_.LookupChild(cur_fd, name, &next);
    }
    struct stat st;
    if (!err) err = StatFd(next.get(), &st);
    if (err) {
      if (qids.empty()) return err;
      break;  // partial walk: Rwalk with the qids so far, newfid untouched
    }
    qids.push_back(host_.QidOf(st));
    cur = std::move(next);
    cur_fd = cur.get();
    path = std::move(next_path);
  }

  if (qids.size() == names.size()) {
    auto nf = std::make_unique<Fid>();
    if (names.empty()) {
      if (int err = DupFd(f->path_fd.get(), &nf->path_fd)) return err;
    } else {
      nf->path_fd = std::move(cur);
    }
    nf->path = path;
    nf->uid = f->uid;
    if (newfid == fid) {
      fids_[fid] = std::move(nf);
    } else if (int err = Install(newfid, std::move(nf))) {
      return err;
    }
  }
  w.U16(static_cast<uint16_t>(qids.size()));
  for (const Qid& q : qids) w.WriteQid(q);
  return 0;
}

int Server::Clunk(Reader& r, Writer&) {
  return fids_.erase(r.U32()) ? 0 : EBADF;
}

int Server::Lopen(Reader& r, Writer& w) {
  uint32_t fid = r.U32(), flags = r.U32();
  Fid* f = Get(fid);
  if (!f) return EBADF;
  if (f->open_fd.valid()) return EINVAL;
  struct stat st;
  if (int err = StatFd(f->path_fd.get(), &st)) return err;
  if (S_ISLNK(st.st_mode)) return ELOOP;
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return EOPNOTSUPP;  // never open host devices/FIFOs
  if (OpenForWriting(flags) && options_.read_only) return EROFS;
  int host_flags = HostOpenFlags(flags);
  if (S_ISDIR(st.st_mode)) {
    if ((flags & kDotlAccMode) == kDotlWronly || (flags & kDotlAccMode) == kDotlRdwr) return EISDIR;
    host_flags |= O_DIRECTORY;
  }
  if (int err = host_.Reopen(f->path_fd.get(), host_flags, &f->open_fd)) return err;
  f->open_flags = flags;
  w.WriteQid(host_.QidOf(st));
  w.U32(0);  // iounit: msize governs
  return 0;
}

int Server::Read(Reader& r, Writer& w, size_t max_reply) {
  uint32_t fid = r.U32();
  uint64_t offset = r.U64();
  uint32_t count = r.U32();
  Fid* f = Get(fid, /*allow_xattr=*/true);
  if (!f) return EBADF;
  size_t room = max_reply > kIoHeaderSize ? max_reply - kIoHeaderSize : 0;
  size_t want = std::min<size_t>(count, room);
  size_t at = w.size();
  w.U32(0);
  uint8_t* buf = w.Grow(want);
  size_t got = 0;
  if (f->is_xattr) {
    if (offset < f->xattr_data.size()) {
      got = std::min<size_t>(want, f->xattr_data.size() - offset);
      std::memcpy(buf, f->xattr_data.data() + offset, got);
    }
  } else {
    if (!f->open_fd.valid()) return EBADF;
    if (offset > static_cast<uint64_t>(INT64_MAX)) return EINVAL;
    ssize_t n;
    do n = pread(f->open_fd.get(), buf, want, static_cast<off_t>(offset));
    while (n < 0 && errno == EINTR);
    if (n < 0) return errno;
    got = static_cast<size_t>(n);
  }
  w.Truncate(at + 4 + got);
  w.PatchU32(at, static_cast<uint32_t>(got));
  return 0;
}

int Server::Write(Reader& r, Writer& w) {
  uint32_t fid = r.U32();
  uint64_t offset = r.U64();
  uint32_t count = r.U32();
  const uint8_t* data = r.Bytes(count);  // EPROTO if the message holds fewer bytes
  Fid* f = Get(fid);
  if (!f || !f->open_fd.valid()) return EBADF;
  if (options_.read_only) return EROFS;
  if (offset > static_cast<uint64_t>(INT64_MAX)) return EINVAL;
  ssize_t n;
  do n = pwrite(f->open_fd.get(), data, count, static_cast<off_t>(offset));
  while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  w.U32(static_cast<uint32_t>(n));
  return 0;
}

int Server::Readdir(Reader& r, Writer& w, size_t max_reply) {
  uint32_t fid = r.U32();
  uint64_t offset = r.U64();
  uint32_t count = r.U32();
  Fid* f = Get(fid);
  if (!f || !f->open_fd.valid()) return EBADF;
  int fd = f->open_fd.get();
  size_t room = std::min<size_t>(count, max_reply > kIoHeaderSize ? max_reply - kIoHeaderSize : 0);
  // Offsets are the filesystem's own cookies (d_off): seek to the one the guest got last time.
  if (lseek(fd, static_cast<off_t>(offset), SEEK_SET) < 0) return errno;
  size_t at = w.size();
  w.U32(0);
  size_t used = 0;
  bool full = false;
  alignas(LinuxDirent64) uint8_t buf[16384];
  while (!full) {
    long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (used == 0) return errno;
      break;
    }
    if (n == 0) break;
    for (long pos = 0; pos < n;) {
      auto* d = reinterpret_cast<LinuxDirent64*>(buf + pos);
      size_t name_len = strnlen(d->d_name, d->d_reclen - offsetof(LinuxDirent64, d_name));
      size_t entry = kQidSize + 8 + 1 + 2 + name_len;
      if (used + entry > room) {
        if (used == 0) return EINVAL;  // the guest's buffer cannot hold even one entry
        full = true;
        break;
      }
      Qid q;
      q.type = QidTypeOfDirent(d->d_type);
      q.path = d->d_ino;
      w.WriteQid(q);
      w.U64(static_cast<uint64_t>(d->d_off));
      w.U8(d->d_type);
      w.Str(std::string(d->d_name, name_len));
      used += entry;
      pos += d->d_reclen;
    }
  }
  w.PatchU32(at, static_cast<uint32_t>(used));
  return 0;
}

int Server::Fsync(Reader& r, Writer&) {
  uint32_t fid = r.U32();
  uint32_t datasync = r.remaining() >= 4 ? r.U32() : 0;  // Linux sends it; the diod spec does not
  Fid* f = Get(fid);
  if (!f || !f->open_fd.valid()) return EBADF;
  int rc = datasync ? fdatasync(f->open_fd.get()) : fsync(f->open_fd.get());
  return rc == 0 ? 0 : errno;
}

Server::State Server::SaveState() const {
  State s;
  s.negotiated = negotiated_;
  s.msize = msize_;
  for (const auto& [id, f] : fids_) {
    if (f->is_xattr) continue;
    s.fids.push_back({id, f->path, f->uid, f->open_fd.valid(), f->open_flags});
  }
  std::sort(s.fids.begin(), s.fids.end(), [](const FidState& a, const FidState& b) { return a.fid < b.fid; });
  return s;
}

size_t Server::RestoreState(const State& state) {
  Reset();
  negotiated_ = state.negotiated;
  msize_ = std::clamp(state.msize, kMinMsize, options_.max_msize);
  size_t dropped = 0;
  for (const FidState& fs : state.fids) {
    auto f = std::make_unique<Fid>();
    f->path = fs.path;
    f->uid = fs.uid;
    struct stat st;
    int err = host_.ResolveInRoot(fs.path, &f->path_fd);
    if (!err) err = StatFd(f->path_fd.get(), &st);
    if (!err && fs.open) {
      if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) err = EOPNOTSUPP;
      else if (OpenForWriting(fs.open_flags) && options_.read_only) err = EROFS;
      if (!err) {
        // Never truncate again: the data written since the original open must survive.
        int flags = HostOpenFlags(fs.open_flags & ~kDotlTrunc) | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
        err = host_.Reopen(f->path_fd.get(), flags, &f->open_fd);
      }
      f->open_flags = fs.open_flags;
    }
    if (!err) err = Install(fs.fid, std::move(f));
    if (err) dropped++;
  }
  return dropped;
}

}  // namespace stencil::p9
