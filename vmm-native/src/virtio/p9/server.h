// A 9P2000.L file server for one shared host directory, independent of any transport: it turns
// one request message (bytes) into one reply message (bytes). Not thread-safe: one caller at a
// time (the virtio device runs it on its worker thread).
//
// Behaviour worth knowing (see host.h for how paths are kept inside the share):
//   - Only "9P2000.L" is spoken; Tversion negotiates msize down to at most options.max_msize and
//     resets the session (all fids clunked). Other requests before Tversion get EPROTO.
//   - Ownership and modes are applied exactly: new files/directories/nodes/symlinks are chowned to
//     the fid's attach uid (n_uname) and the requested gid, then chmod'ed to the requested mode, so
//     the host umask does not matter. This needs the server to run as root (CAP_CHOWN, CAP_FOWNER).
//   - Reads and readdir are bounded by msize (and by the reply room the transport has).
//   - Readdir offsets are the host filesystem's own directory cookies (d_off), so a listing can
//     resume at any offset returned earlier.
//   - Extended attributes: Txattrwalk reads "user.*" attributes (and lists only "user.*" names);
//     other namespaces answer EOPNOTSUPP. Txattrcreate (setting/removing) answers EOPNOTSUPP.
//   - Locks: Tlock is always granted and Tgetlock always reports no conflict. The guest kernel
//     already arbitrates POSIX locks between its own processes before sending Tlock; locks are
//     not coordinated with host processes.
//   - Device nodes, FIFOs and sockets can be created (mknod) but are never opened on the host:
//     Tlopen on them answers EOPNOTSUPP (the guest kernel handles them locally anyway).
//   - Requests are handled in order and to completion, so Tflush has nothing to cancel.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "../../fd.h"
#include "host.h"
#include "wire.h"

namespace stencil::p9 {

struct ServerOptions {
  bool read_only = false;       // every modification answers EROFS
  uint32_t max_msize = 512 * 1024;
  size_t max_fids = 65536;      // each fid holds one or two host fds
};

class Server {
 public:
  static constexpr uint32_t kMinMsize = 4096;

  // `root` is a directory fd (O_PATH is enough) of the shared directory; the server owns it.
  explicit Server(UniqueFd root, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Handles one request; the reply is never longer than max(max_reply, 11) bytes (Rlerror is 11).
  std::vector<uint8_t> Handle(const uint8_t* msg, size_t len, size_t max_reply);
  // Clunks every fid and forgets the negotiated version (device reset).
  void Reset();

  uint32_t msize() const { return msize_; }
  bool negotiated() const { return negotiated_; }
  size_t fid_count() const { return fids_.size(); }

  // Enough to rebuild the session after save/restore: fids as root-relative paths (the guest's
  // view, kept up to date across renames) plus open flags. Xattr fids are transient and dropped.
  struct FidState {
    uint32_t fid = 0;
    std::string path;  // relative to the share root, "" for the root itself
    uint32_t uid = 0;
    bool open = false;
    uint32_t open_flags = 0;  // 9P2000.L (dotl) flags of Tlopen/Tlcreate
    bool operator==(const FidState& o) const {
      return fid == o.fid && path == o.path && uid == o.uid && open == o.open && open_flags == o.open_flags;
    }
  };
  struct State {
    bool negotiated = false;
    uint32_t msize = 0;
    std::vector<FidState> fids;
  };
  State SaveState() const;
  // Replaces the session with `state`. Fids whose file is gone (or cannot be reopened) are
  // dropped; returns how many were dropped.
  size_t RestoreState(const State& state);

 private:
  struct Fid {
    UniqueFd path_fd;  // O_PATH | O_NOFOLLOW: the file itself (a symlink stays a symlink)
    std::string path;  // root-relative, no "." or ".." components
    uint32_t uid = 0;
    UniqueFd open_fd;  // after Tlopen / Tlcreate
    uint32_t open_flags = 0;
    bool is_xattr = false;  // from Txattrwalk: reads come from xattr_data
    std::string xattr_data;
  };

  int Dispatch(uint8_t type, Reader& r, Writer& w, size_t max_reply);
  Fid* Get(uint32_t fid, bool allow_xattr = false);  // nullptr if unknown (or an xattr fid)
  int Install(uint32_t fid, std::unique_ptr<Fid> f);  // EBADF for NOFID, EEXIST if in use, EMFILE
  int ParentOf(const Fid& f, UniqueFd* dir, std::string* name);
  void RenamePaths(const std::string& from, const std::string& to);
  // Gives a just-created entry its owner and exact mode (mode < 0: a symlink, no chmod); on
  // failure removes the entry again so nothing half-made is left behind.
  int FinishCreate(int dir_fd, const std::string& name, int fd, uint32_t uid, uint32_t gid, long mode, bool is_dir);
  static std::string Join(const std::string& dir, const std::string& name);

  // session and file I/O (server.cc)
  int Version(Reader& r, Writer& w);
  int Attach(Reader& r, Writer& w);
  int Walk(Reader& r, Writer& w);
  int Clunk(Reader& r, Writer& w);
  int Lopen(Reader& r, Writer& w);
  int Read(Reader& r, Writer& w, size_t max_reply);
  int Write(Reader& r, Writer& w);
  int Readdir(Reader& r, Writer& w, size_t max_reply);
  int Fsync(Reader& r, Writer& w);
  // namespace and attributes (ops.cc)
  int Lcreate(Reader& r, Writer& w);
  int Mkdir(Reader& r, Writer& w);
  int Symlink(Reader& r, Writer& w);
  int Mknod(Reader& r, Writer& w);
  int Link(Reader& r, Writer& w);
  int Readlink(Reader& r, Writer& w, size_t max_reply);
  int Rename(Reader& r, Writer& w);
  int Renameat(Reader& r, Writer& w);
  int Unlinkat(Reader& r, Writer& w);
  int Remove(Reader& r, Writer& w);
  int Getattr(Reader& r, Writer& w);
  int Setattr(Reader& r, Writer& w);
  int Statfs(Reader& r, Writer& w);
  int Xattrwalk(Reader& r, Writer& w);
  int Lock(Reader& r, Writer& w);
  int Getlock(Reader& r, Writer& w);

  HostRoot host_;
  ServerOptions options_;
  uint32_t msize_;
  bool negotiated_ = false;
  std::unordered_map<uint32_t, std::unique_ptr<Fid>> fids_;
};

}  // namespace stencil::p9
