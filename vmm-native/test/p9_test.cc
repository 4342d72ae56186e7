// The 9P2000.L server against a scratch directory: every operation containers rely on, escape
// attempts that must stay inside the share, and malformed messages that must give Rlerror.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <set>

#include "p9_client.h"

using namespace p9test;

namespace {

constexpr uint32_t kRoot = 1;

class P9Server : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(client.Version(65536), 65536u);
    ASSERT_EQ(client.Attach(kRoot, 0, "", &root_qid), 0u);
  }
  struct stat HostStat(const std::string& rel) {
    struct stat st {};
    EXPECT_EQ(lstat((dir / rel).c_str(), &st), 0) << rel;
    return st;
  }
  ScratchDir dir;
  Server server{dir.OpenRoot()};
  Client client{server};
  Qid root_qid;
};

bool IsRoot() { return geteuid() == 0; }

}  // namespace

TEST_F(P9Server, NegotiatesVersionAndMsize) {
  std::string v;
  EXPECT_EQ(client.Version(1 << 30, "9P2000.L", &v), 512u * 1024);
  EXPECT_EQ(v, "9P2000.L");
  EXPECT_EQ(server.fid_count(), 0u);  // Tversion ended the previous session
  EXPECT_EQ(client.Version(8192, "9P2000.u", &v), 8192u);
  EXPECT_EQ(v, "unknown");
  EXPECT_EQ(client.Attach(kRoot), uint32_t(EPROTO));  // nothing works until 9P2000.L is agreed
  EXPECT_EQ(client.Version(100), 0u);                 // below the minimum msize: Rlerror
  EXPECT_EQ(client.Version(16384), 16384u);
  EXPECT_EQ(client.Attach(kRoot), 0u);
  EXPECT_EQ(client.Attach(kRoot), uint32_t(EEXIST));
}

TEST_F(P9Server, CreateWriteReadGetattr) {
  ASSERT_EQ(client.Walk(kRoot, 2, {}), 0u);
  ASSERT_EQ(client.Create(2, "hello.txt", kDotlRdwr, 0640, 1234), 0u);
  uint32_t n = 0;
  ASSERT_EQ(client.WriteData(2, 0, "hello, world", &n), 0u);
  EXPECT_EQ(n, 12u);
  std::string data;
  ASSERT_EQ(client.ReadData(2, 7, 100, &data), 0u);
  EXPECT_EQ(data, "world");
  ASSERT_EQ(client.ReadData(2, 100, 10, &data), 0u);
  EXPECT_EQ(data, "");
  EXPECT_EQ(dir.ReadFile("hello.txt"), "hello, world");
  struct stat st = HostStat("hello.txt");
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  if (IsRoot()) {
    EXPECT_EQ(st.st_gid, 1234u);
  }

  Attr a{};
  ASSERT_EQ(client.Getattr(2, &a), 0u);
  EXPECT_EQ(a.valid, kGetattrBasic);
  EXPECT_EQ(a.mode, st.st_mode);
  EXPECT_EQ(a.size, 12u);
  EXPECT_EQ(a.nlink, 1u);
  EXPECT_EQ(a.qid.path, st.st_ino);
  EXPECT_EQ(a.qid.type, kQtFile);

  // Exclusive create of an existing name fails; a plain one opens (and here truncates) it.
  ASSERT_EQ(client.Walk(kRoot, 3, {}), 0u);
  EXPECT_EQ(client.Create(3, "hello.txt", kDotlWronly | kDotlExcl, 0600, 0), uint32_t(EEXIST));
  EXPECT_EQ(client.Create(3, "hello.txt", kDotlWronly | kDotlTrunc, 0600, 0), 0u);
  EXPECT_EQ(dir.ReadFile("hello.txt"), "");
  EXPECT_EQ(HostStat("hello.txt").st_mode & 07777, 0640u);  // an existing file keeps its mode
}

TEST_F(P9Server, ModesAreExactDespiteUmask) {
  mode_t old = umask(077);
  ASSERT_EQ(client.Walk(kRoot, 2, {}), 0u);
  EXPECT_EQ(client.Create(2, "f", kDotlWronly, 04755, 0), 0u);
  EXPECT_EQ(client.Mkdir(kRoot, "d", 02775, 0), 0u);
  umask(old);
  EXPECT_EQ(HostStat("f").st_mode & 07777, 04755u);
  EXPECT_EQ(HostStat("d").st_mode & 07777, 02775u);
}

TEST_F(P9Server, OwnershipIsPreserved) {
  if (!IsRoot()) GTEST_SKIP() << "needs root to chown";
  ASSERT_EQ(client.Attach(10, 1000), 0u);  // a second user attaches with n_uname 1000
  ASSERT_EQ(client.Walk(10, 11, {}), 0u);
  ASSERT_EQ(client.Create(11, "mine", kDotlWronly, 0600, 2000), 0u);
  ASSERT_EQ(client.Mkdir(10, "subdir", 0700, 3000), 0u);
  ASSERT_EQ(client.Call(kTsymlink, [](Writer& w) { w.U32(10), w.Str("ln"), w.Str("mine"), w.U32(4000); }).error(), 0u);
  ASSERT_EQ(client.Call(kTmknod, [](Writer& w) {
              w.U32(10), w.Str("fifo"), w.U32(S_IFIFO | 0620), w.U32(0), w.U32(0), w.U32(5000);
            }).error(), 0u);
  struct stat st = HostStat("mine");
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 2000u);
  st = HostStat("subdir");
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 3000u);
  st = HostStat("ln");
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_gid, 4000u);
  st = HostStat("fifo");
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0620u);
  EXPECT_EQ(st.st_gid, 5000u);

  // setattr chown, then a set-gid mode survives it (chown goes first).
  ASSERT_EQ(client.Walk(kRoot, 2, {"mine"}), 0u);
  EXPECT_EQ(client.Setattr(2, kSetattrUid | kSetattrGid | kSetattrMode, 02750, 42, 43, 0), 0u);
  st = HostStat("mine");
  EXPECT_EQ(st.st_uid, 42u);
  EXPECT_EQ(st.st_gid, 43u);
  EXPECT_EQ(st.st_mode & 07777, 02750u);
  // chown of a symlink changes the link, not its target.
  ASSERT_EQ(client.Walk(kRoot, 3, {"ln"}), 0u);
  EXPECT_EQ(client.Setattr(3, kSetattrUid, 0, 7, 0, 0), 0u);
  EXPECT_EQ(HostStat("ln").st_uid, 7u);
  EXPECT_EQ(HostStat("mine").st_uid, 42u);
}

TEST_F(P9Server, SetattrSizeAndTimes) {
  dir.WriteFile("f", "0123456789");
  ASSERT_EQ(client.Walk(kRoot, 2, {"f"}), 0u);
  EXPECT_EQ(client.Setattr(2, kSetattrSize, 0, 0, 0, 4), 0u);
  EXPECT_EQ(dir.ReadFile("f"), "0123");
  EXPECT_EQ(client.Setattr(2, kSetattrAtime | kSetattrAtimeSet | kSetattrMtime | kSetattrMtimeSet, 0, 0, 0, 0,
                           1000000, 2000000), 0u);
  struct stat st = HostStat("f");
  EXPECT_EQ(st.st_atime, 1000000);
  EXPECT_EQ(st.st_mtime, 2000000);
  EXPECT_EQ(client.Setattr(2, kSetattrMtime, 0, 0, 0, 0), 0u);  // MTIME without _SET: now
  st = HostStat("f");
  EXPECT_GT(st.st_mtime, time(nullptr) - 60);
  EXPECT_EQ(st.st_atime, 1000000);  // untouched
  EXPECT_EQ(client.Setattr(kRoot, kSetattrSize, 0, 0, 0, 0), uint32_t(EISDIR));
}

TEST_F(P9Server, MkdirReaddirWithStableOffsets) {
  std::set<std::string> expected = {".", ".."};
  ASSERT_EQ(client.Mkdir(kRoot, "d", 0755, 0), 0u);
  ASSERT_EQ(client.Walk(kRoot, 2, {"d"}), 0u);
  for (int i = 0; i < 150; i++) {
    std::string name = "entry-with-a-longish-name-" + std::to_string(i);
    dir.WriteFile("d/" + name, "x");
    expected.insert(name);
  }
  ASSERT_EQ(client.Open(2, kDotlRdonly | kDotlDirectory), 0u);
  for (uint32_t count : {300u, 1000u, 65000u}) {  // small buffers force many resumed calls
    std::vector<std::string> names = client.ListDir(2, count);
    EXPECT_EQ(names.size(), expected.size()) << "count " << count;
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), expected);
  }
  std::vector<Dirent> one;
  EXPECT_EQ(client.Readdir(2, 0, 10, &one), uint32_t(EINVAL));  // cannot hold a single entry
  ASSERT_EQ(client.Walk(kRoot, 3, {"d"}), 0u);
  EXPECT_EQ(client.Readdir(3, 0, 4096, &one), uint32_t(EBADF));  // not opened
}

TEST_F(P9Server, RenameUnlinkRemove) {
  ASSERT_EQ(client.Mkdir(kRoot, "a", 0755, 0), 0u);
  ASSERT_EQ(client.Mkdir(kRoot, "b", 0755, 0), 0u);
  dir.WriteFile("a/f", "data");
  ASSERT_EQ(client.Walk(kRoot, 2, {"a"}), 0u);
  ASSERT_EQ(client.Walk(kRoot, 3, {"b"}), 0u);
  ASSERT_EQ(client.Walk(kRoot, 4, {"a", "f"}), 0u);
  ASSERT_EQ(client.Call(kTrenameat, [](Writer& w) { w.U32(2), w.Str("f"), w.U32(3), w.Str("g"); }).error(), 0u);
  EXPECT_EQ(dir.ReadFile("b/g"), "data");
  // The fid followed the rename: ".." from it is now b.
  std::vector<Qid> q;
  ASSERT_EQ(client.Walk(4, 5, {".."}, &q), 0u);
  EXPECT_EQ(q[0].path, HostStat("b").st_ino);
  // Trename moves a fid's file; renaming a directory moves the fids below it too.
  ASSERT_EQ(client.Call(kTrename, [](Writer& w) { w.U32(3), w.U32(kRoot), w.Str("c"); }).error(), 0u);
  ASSERT_EQ(client.Walk(4, 6, {".."}, &q), 0u);
  EXPECT_EQ(q.back().path, HostStat("c").st_ino);
  auto saved = server.SaveState();
  auto it = std::find_if(saved.fids.begin(), saved.fids.end(), [](auto& f) { return f.fid == 4; });
  ASSERT_NE(it, saved.fids.end());
  EXPECT_EQ(it->path, "c/g");

  EXPECT_EQ(client.Call(kTunlinkat, [](Writer& w) { w.U32(kRoot), w.Str("c"), w.U32(0); }).error(), uint32_t(EISDIR));
  EXPECT_EQ(client.Call(kTunlinkat, [](Writer& w) { w.U32(kRoot), w.Str("c"), w.U32(kDotlAtRemovedir); }).error(),
            uint32_t(ENOTEMPTY));
  EXPECT_EQ(client.Call(kTunlinkat, [](Writer& w) { w.U32(6), w.Str("g"), w.U32(0); }).error(), 0u);
  EXPECT_EQ(client.Call(kTunlinkat, [](Writer& w) { w.U32(kRoot), w.Str("c"), w.U32(kDotlAtRemovedir); }).error(), 0u);
  EXPECT_FALSE(std::filesystem::exists(dir / "c"));
  // Tremove removes and clunks, even the share root is refused (and clunked).
  ASSERT_EQ(client.Walk(kRoot, 7, {"a"}), 0u);
  EXPECT_EQ(client.Call(kTremove, [](Writer& w) { w.U32(7); }).error(), 0u);
  EXPECT_FALSE(std::filesystem::exists(dir / "a"));
  EXPECT_EQ(client.Clunk(7), uint32_t(EBADF));
  ASSERT_EQ(client.Walk(kRoot, 8, {}), 0u);
  EXPECT_EQ(client.Call(kTremove, [](Writer& w) { w.U32(8); }).error(), uint32_t(EBUSY));
  EXPECT_TRUE(std::filesystem::exists(dir.path()));
}

TEST_F(P9Server, SymlinkReadlinkLink) {
  dir.WriteFile("target", "t");
  ASSERT_EQ(client.Call(kTsymlink, [](Writer& w) { w.U32(kRoot), w.Str("ln"), w.Str("../x/target"), w.U32(0); }).error(), 0u);
  std::vector<Qid> q;
  ASSERT_EQ(client.Walk(kRoot, 2, {"ln"}, &q), 0u);
  EXPECT_EQ(q[0].type, kQtSymlink);
  Reply r = client.Call(kTreadlink, [](Writer& w) { w.U32(2); });
  ASSERT_EQ(r.error(), 0u);
  EXPECT_EQ(r.Body().Str(), "../x/target");
  ASSERT_EQ(client.Walk(kRoot, 3, {"target"}), 0u);
  ASSERT_EQ(client.Call(kTlink, [](Writer& w) { w.U32(kRoot), w.U32(3), w.Str("hard"); }).error(), 0u);
  EXPECT_EQ(HostStat("hard").st_ino, HostStat("target").st_ino);
  Attr a{};
  ASSERT_EQ(client.Getattr(3, &a), 0u);
  EXPECT_EQ(a.nlink, 2u);
  EXPECT_EQ(client.Call(kTlink, [](Writer& w) { w.U32(kRoot), w.U32(kRoot), w.Str("dirlink"); }).error(), uint32_t(EPERM));
}

TEST_F(P9Server, MknodStatfsFsyncLocksXattrs) {
  ASSERT_EQ(client.Call(kTmknod, [](Writer& w) {
              w.U32(kRoot), w.Str("p"), w.U32(S_IFIFO | 0600), w.U32(0), w.U32(0), w.U32(0);
            }).error(), 0u);
  ASSERT_EQ(client.Walk(kRoot, 2, {"p"}), 0u);
  EXPECT_EQ(client.Open(2, kDotlRdonly), uint32_t(EOPNOTSUPP));  // never opened on the host
  EXPECT_EQ(client.Call(kTmknod, [](Writer& w) {
              w.U32(kRoot), w.Str("bad"), w.U32(S_IFDIR | 0600), w.U32(0), w.U32(0), w.U32(0);
            }).error(), uint32_t(EINVAL));

  Reply r = client.Call(kTstatfs, [](Writer& w) { w.U32(kRoot); });
  ASSERT_EQ(r.error(), 0u);
  Reader b = r.Body();
  b.U32();
  EXPECT_GT(b.U32(), 0u);  // bsize
  EXPECT_GT(b.U64(), 0u);  // blocks

  ASSERT_EQ(client.Walk(kRoot, 3, {}), 0u);
  ASSERT_EQ(client.Create(3, "f", kDotlRdwr, 0644, 0), 0u);
  EXPECT_EQ(client.Call(kTfsync, [](Writer& w) { w.U32(3), w.U32(0); }).error(), 0u);
  EXPECT_EQ(client.Call(kTfsync, [](Writer& w) { w.U32(3); }).error(), 0u);
  EXPECT_EQ(client.Call(kTfsync, [](Writer& w) { w.U32(kRoot), w.U32(1); }).error(), uint32_t(EBADF));
  r = client.Call(kTlock, [](Writer& w) { w.U32(3), w.U8(kLockTypeWrlck), w.U32(0), w.U64(0), w.U64(0), w.U32(7), w.Str("c"); });
  ASSERT_EQ(r.error(), 0u);
  EXPECT_EQ(r.Body().U8(), kLockSuccess);
  r = client.Call(kTgetlock, [](Writer& w) { w.U32(3), w.U8(kLockTypeWrlck), w.U64(5), w.U64(10), w.U32(7), w.Str("c"); });
  ASSERT_EQ(r.error(), 0u);
  EXPECT_EQ(r.Body().U8(), kLockTypeUnlck);

  ASSERT_EQ(setxattr((dir / "f").c_str(), "user.color", "blue", 4, 0), 0);
  r = client.Call(kTxattrwalk, [](Writer& w) { w.U32(3), w.U32(4), w.Str("user.color"); });
  ASSERT_EQ(r.error(), 0u);
  EXPECT_EQ(r.Body().U64(), 4u);
  std::string value;
  ASSERT_EQ(client.ReadData(4, 0, 100, &value), 0u);
  EXPECT_EQ(value, "blue");
  EXPECT_EQ(client.Clunk(4), 0u);
  r = client.Call(kTxattrwalk, [](Writer& w) { w.U32(3), w.U32(4), w.Str(""); });
  ASSERT_EQ(r.error(), 0u);
  ASSERT_EQ(client.ReadData(4, 0, 100, &value), 0u);
  EXPECT_EQ(value, std::string("user.color\0", 11));
  EXPECT_EQ(client.Call(kTxattrwalk, [](Writer& w) { w.U32(3), w.U32(5), w.Str("user.none"); }).error(), uint32_t(ENODATA));
  EXPECT_EQ(client.Call(kTxattrwalk, [](Writer& w) { w.U32(3), w.U32(5), w.Str("security.capability"); }).error(),
            uint32_t(EOPNOTSUPP));
  EXPECT_EQ(client.Call(kTxattrcreate, [](Writer& w) { w.U32(3), w.Str("user.x"), w.U64(1), w.U32(0); }).error(),
            uint32_t(EOPNOTSUPP));
  EXPECT_EQ(client.Call(kTflush, [](Writer& w) { w.U16(3); }).error(), 0u);
}

TEST_F(P9Server, ReadsAreBoundedByMsizeAndReplyRoom) {
  dir.WriteFile("big", std::string(200000, 'z'));
  ASSERT_EQ(client.Walk(kRoot, 2, {"big"}), 0u);
  ASSERT_EQ(client.Open(2, kDotlRdonly), 0u);
  std::string data;
  ASSERT_EQ(client.ReadData(2, 0, 0xffffffff, &data), 0u);
  EXPECT_EQ(data.size(), 65536u - kIoHeaderSize);
  client.max_reply = 100;  // the transport has less room than msize
  ASSERT_EQ(client.ReadData(2, 0, 4096, &data), 0u);
  EXPECT_EQ(data.size(), 100u - kIoHeaderSize);
}

TEST_F(P9Server, ReadOnlyShareRefusesChanges) {
  dir.WriteFile("f", "x");
  ServerOptions o;
  o.read_only = true;
  Server ro(dir.OpenRoot(), o);
  Client c(ro);
  ASSERT_EQ(c.Version(65536), 65536u);
  ASSERT_EQ(c.Attach(kRoot), 0u);
  ASSERT_EQ(c.Walk(kRoot, 2, {"f"}), 0u);
  EXPECT_EQ(c.Open(2, kDotlRdwr), uint32_t(EROFS));
  EXPECT_EQ(c.Open(2, kDotlRdonly | kDotlTrunc), uint32_t(EROFS));
  EXPECT_EQ(c.Open(2, kDotlRdonly), 0u);
  EXPECT_EQ(c.Mkdir(kRoot, "d", 0755, 0), uint32_t(EROFS));
  EXPECT_EQ(c.Setattr(2, kSetattrMode, 0777, 0, 0, 0), uint32_t(EROFS));
  EXPECT_EQ(c.Call(kTunlinkat, [](Writer& w) { w.U32(kRoot), w.Str("f"), w.U32(0); }).error(), uint32_t(EROFS));
  EXPECT_EQ(dir.ReadFile("f"), "x");
}

// --- escape attempts: every one must stay inside the share ---

TEST_F(P9Server, DotDotNeverLeavesTheRoot) {
  std::vector<Qid> q;
  ASSERT_EQ(client.Walk(kRoot, 2, {"..", "..", ".."}, &q), 0u);
  for (auto& x : q) EXPECT_EQ(x, root_qid);
  ASSERT_EQ(client.Mkdir(kRoot, "sub", 0755, 0), 0u);
  q.clear();
  ASSERT_EQ(client.Walk(kRoot, 3, {"sub", "..", "..", "sub"}, &q), 0u);
  EXPECT_EQ(q[2], root_qid);
  // aname cannot climb out either.
  Qid a;
  ASSERT_EQ(client.Attach(9, 0, "../../..", &a), 0u);
  EXPECT_EQ(a, root_qid);
  EXPECT_EQ(client.Attach(10, 0, "/etc"), uint32_t(ENOENT));
}

TEST_F(P9Server, SymlinksPointingOutsideStayInside) {
  ASSERT_EQ(symlink("/etc/shadow", (dir / "shadow").c_str()), 0);
  ASSERT_EQ(symlink("../../../../../../etc", (dir / "up").c_str()), 0);
  ASSERT_EQ(symlink("/", (dir / "abs").c_str()), 0);
  struct stat shadow_before {};
  bool have_shadow = stat("/etc/shadow", &shadow_before) == 0;

  // A symlink is walked to as itself, never through.
  std::vector<Qid> q;
  ASSERT_EQ(client.Walk(kRoot, 2, {"shadow"}, &q), 0u);
  EXPECT_EQ(q[0].type, kQtSymlink);
  EXPECT_EQ(client.Open(2, kDotlRdonly), uint32_t(ELOOP));
  EXPECT_EQ(client.Open(2, kDotlRdwr | kDotlTrunc), uint32_t(ELOOP));
  EXPECT_EQ(client.Setattr(2, kSetattrMode, 0777, 0, 0, 0), uint32_t(EOPNOTSUPP));
  EXPECT_EQ(client.Setattr(2, kSetattrSize, 0, 0, 0, 0), uint32_t(EINVAL));
  EXPECT_EQ(client.Call(kTxattrwalk, [](Writer& w) { w.U32(2), w.U32(3), w.Str("user.x"); }).error(), uint32_t(ENODATA));
  Attr a{};
  ASSERT_EQ(client.Getattr(2, &a), 0u);
  EXPECT_TRUE(S_ISLNK(a.mode));
  EXPECT_NE(client.Walk(kRoot, 4, {"up", "passwd"}), 0u);
  EXPECT_NE(client.Walk(kRoot, 4, {"abs", "etc"}), 0u);
  // Creating through a symlink name neither follows it nor touches the target.
  ASSERT_EQ(client.Walk(kRoot, 5, {}), 0u);
  EXPECT_EQ(client.Create(5, "shadow", kDotlWronly | kDotlTrunc, 0666, 0), uint32_t(ELOOP));
  // Hard-linking a symlink links the symlink itself.
  ASSERT_EQ(client.Call(kTlink, [](Writer& w) { w.U32(kRoot), w.U32(2), w.Str("hard"); }).error(), 0u);
  EXPECT_TRUE(S_ISLNK(HostStat("hard").st_mode));
  // A restored session resolves paths inside the root: "abs/etc/shadow" is not the host's.
  Server::State s = server.SaveState();
  s.fids.push_back({20, "abs/etc/shadow", 0, true, kDotlRdwr});
  s.fids.push_back({21, "up/passwd", 0, false, 0});
  EXPECT_EQ(server.RestoreState(s), 2u);
  EXPECT_EQ(client.Open(20, kDotlRdonly), uint32_t(EBADF));
  // An attach path through symlinks is resolved inside the root too.
  EXPECT_EQ(client.Attach(30, 0, "abs/etc"), uint32_t(ENOENT));
  ASSERT_EQ(client.Mkdir(kRoot, "etc", 0755, 0), 0u);
  Qid inside;
  ASSERT_EQ(client.Attach(31, 0, "abs/etc", &inside), 0u);
  EXPECT_EQ(inside.path, HostStat("etc").st_ino);

  struct stat shadow_after {};
  if (have_shadow) {
    ASSERT_EQ(stat("/etc/shadow", &shadow_after), 0);
    EXPECT_EQ(shadow_after.st_size, shadow_before.st_size);
    EXPECT_EQ(shadow_after.st_mode, shadow_before.st_mode);
    EXPECT_EQ(shadow_after.st_mtim.tv_sec, shadow_before.st_mtim.tv_sec);
  }
}

// --- malformed messages: Rlerror, never a crash (the test build runs ASan/UBSan) ---

TEST_F(P9Server, MalformedMessagesGetRlerror) {
  auto err = [&](std::vector<uint8_t> m) { return client.Raw(m).error(); };
  EXPECT_EQ(err({}), uint32_t(EPROTO));
  EXPECT_EQ(err({1, 0, 0}), uint32_t(EPROTO));
  EXPECT_EQ(err({200, 0, 0, 0, kTclunk, 1, 0, 1, 0, 0, 0}), uint32_t(EPROTO));  // size past the end
  EXPECT_EQ(err({3, 0, 0, 0, kTclunk, 1, 0}), uint32_t(EPROTO));                // size below a header
  EXPECT_EQ(err({9, 0, 0, 0, kTclunk, 1, 0, 1, 0}), uint32_t(EPROTO));          // truncated fid
  std::vector<uint8_t> huge = {0, 0, 2, 0, kTclunk, 1, 0};                     // 128 KiB > msize
  huge.resize(0x20000);
  EXPECT_EQ(err(huge), uint32_t(EMSGSIZE));
  // String length past the end.
  EXPECT_EQ(client.Call(kTwalk, [](Writer& w) { w.U32(kRoot), w.U32(2), w.U16(1), w.U16(500), w.U8('a'); }).error(),
            uint32_t(EPROTO));
  // Too many names, bad names.
  EXPECT_EQ(client.Call(kTwalk, [](Writer& w) { w.U32(kRoot), w.U32(2), w.U16(17); }).error(), uint32_t(EINVAL));
  EXPECT_EQ(client.Walk(kRoot, 2, {"a/b"}), uint32_t(EINVAL));
  EXPECT_EQ(client.Walk(kRoot, 2, {std::string("a\0b", 3)}), uint32_t(EINVAL));
  EXPECT_EQ(client.Walk(kRoot, 2, {""}), uint32_t(EINVAL));
  EXPECT_EQ(client.Walk(kRoot, 2, {std::string(256, 'n')}), uint32_t(ENAMETOOLONG));
  EXPECT_EQ(client.Mkdir(kRoot, "..", 0755, 0), uint32_t(EINVAL));
  EXPECT_EQ(client.Create(kRoot, "x/y", kDotlWronly, 0644, 0), uint32_t(EINVAL));
  // A write whose count exceeds the data sent.
  ASSERT_EQ(client.Walk(kRoot, 2, {}), 0u);
  ASSERT_EQ(client.Create(2, "f", kDotlRdwr, 0644, 0), 0u);
  EXPECT_EQ(client.Call(kTwrite, [](Writer& w) { w.U32(2), w.U64(0), w.U32(0x7fffffff), w.Bytes("abc", 3); }).error(),
            uint32_t(EPROTO));
  EXPECT_EQ(client.Call(kTwrite, [](Writer& w) { w.U32(2), w.U64(~0ull), w.U32(1), w.Bytes("a", 1); }).error(),
            uint32_t(EINVAL));
  // Unknown fids, unknown and legacy message types.
  EXPECT_EQ(client.Clunk(99), uint32_t(EBADF));
  EXPECT_EQ(client.Call(200, [](Writer&) {}).error(), uint32_t(EOPNOTSUPP));
  EXPECT_EQ(client.Call(112 /* Topen */, [](Writer& w) { w.U32(2), w.U8(0); }).error(), uint32_t(EOPNOTSUPP));
  EXPECT_EQ(client.Attach(kNoFid), uint32_t(EBADF));
  // Replies keep the request's tag.
  Reply r = client.Raw({11, 0, 0, 0, kTclunk, 0x34, 0x12, 99, 0, 0, 0});
  EXPECT_EQ(r.tag(), 0x1234);
  EXPECT_EQ(r.error(), uint32_t(EBADF));
}

TEST_F(P9Server, RandomGarbageNeverCrashes) {
  std::mt19937 rng(1234);
  const uint8_t types[] = {kTstatfs, kTlopen, kTlcreate, kTsymlink, kTmknod, kTrename, kTreadlink, kTgetattr,
                           kTsetattr, kTxattrwalk, kTxattrcreate, kTreaddir, kTfsync, kTlock, kTgetlock, kTlink,
                           kTmkdir, kTrenameat, kTunlinkat, kTattach, kTflush, kTwalk, kTread, kTwrite, kTclunk,
                           kTremove, kTauth};
  ASSERT_EQ(client.Walk(kRoot, 2, {}), 0u);
  for (int i = 0; i < 20000; i++) {
    std::vector<uint8_t> body(rng() % 64);
    for (auto& b : body) b = static_cast<uint8_t>(rng() % 4 == 0 ? rng() % 3 : rng());  // small fids are likely
    uint8_t type = types[rng() % sizeof types];
    Reply r = client.Call(type, [&](Writer& w) { w.Bytes(body.data(), body.size()); });
    ASSERT_GE(r.bytes.size(), kHeaderSize);
  }
  // The share itself survived whatever the garbage did inside it.
  EXPECT_TRUE(std::filesystem::is_directory(dir.path()));
}

TEST_F(P9Server, StateRoundTrip) {
  dir.WriteFile("f", "persisted");
  ASSERT_EQ(client.Mkdir(kRoot, "d", 0755, 0), 0u);
  ASSERT_EQ(client.Walk(kRoot, 2, {"f"}), 0u);
  ASSERT_EQ(client.Open(2, kDotlRdwr), 0u);
  ASSERT_EQ(client.Walk(kRoot, 3, {"d"}), 0u);
  ASSERT_EQ(client.Open(3, kDotlRdonly | kDotlDirectory), 0u);
  ASSERT_EQ(client.Call(kTxattrwalk, [](Writer& w) { w.U32(2), w.U32(4), w.Str(""); }).error(), 0u);
  Server::State s = server.SaveState();
  EXPECT_TRUE(s.negotiated);
  EXPECT_EQ(s.msize, 65536u);
  ASSERT_EQ(s.fids.size(), 3u);  // the xattr fid is transient
  EXPECT_EQ(s.fids[0], (Server::FidState{kRoot, "", 0, false, 0}));
  EXPECT_EQ(s.fids[1], (Server::FidState{2, "f", 0, true, kDotlRdwr}));
  EXPECT_EQ(s.fids[2], (Server::FidState{3, "d", 0, true, kDotlRdonly | kDotlDirectory}));

  Server restored(dir.OpenRoot());
  EXPECT_EQ(restored.RestoreState(s), 0u);
  EXPECT_EQ(restored.SaveState().fids, s.fids);
  EXPECT_EQ(restored.msize(), 65536u);
  Client c(restored);
  std::string data;
  ASSERT_EQ(c.ReadData(2, 0, 100, &data), 0u);
  EXPECT_EQ(data, "persisted");
  ASSERT_EQ(c.WriteData(2, 0, "P"), 0u);
  EXPECT_EQ(dir.ReadFile("f"), "Persisted");
  EXPECT_EQ(c.ListDir(3, 4096).size(), 2u);  // "." and ".."
}
