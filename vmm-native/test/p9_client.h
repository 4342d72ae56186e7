// A minimal 9P2000.L client for tests: encodes T-messages, runs them through a p9::Server (or
// anything taking bytes), and decodes the replies. Plus a scratch directory that cleans up.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../src/virtio/p9/server.h"

namespace p9test {

using namespace stencil::p9;

struct Reply {
  std::vector<uint8_t> bytes;
  uint8_t type() const { return bytes.size() > 4 ? bytes[4] : 0; }
  uint16_t tag() const { return bytes.size() > 6 ? static_cast<uint16_t>(bytes[5] | bytes[6] << 8) : 0; }
  uint32_t size_field() const { return Reader(bytes.data(), bytes.size()).U32(); }
  static constexpr uint32_t kNoReply = 0xdeadbeef;
  // The Rlerror code, 0 for any other reply, kNoReply if there was no (complete) reply at all.
  uint32_t error() const {
    if (bytes.size() < kHeaderSize) return kNoReply;
    return type() == kRlerror ? Body().U32() : 0;
  }
  Reader Body() const {
    return bytes.size() < kHeaderSize ? Reader(nullptr, 0) : Reader(bytes.data() + kHeaderSize, bytes.size() - kHeaderSize);
  }
};

struct Attr {
  uint64_t valid;
  Qid qid;
  uint32_t mode, uid, gid;
  uint64_t nlink, rdev, size, blksize, blocks;
  uint64_t atime_sec, atime_nsec, mtime_sec, mtime_nsec;
};

struct Dirent {
  Qid qid;
  uint64_t offset;
  uint8_t type;
  std::string name;
};

class Client {
 public:
  using Transport = std::function<std::vector<uint8_t>(const std::vector<uint8_t>&, size_t max_reply)>;
  explicit Client(Transport t) : transport_(std::move(t)) {}
  explicit Client(Server& s)
      : transport_([&s](const std::vector<uint8_t>& m, size_t max) { return s.Handle(m.data(), m.size(), max); }) {}

  size_t max_reply = 1 << 20;

  Reply Call(uint8_t type, const std::function<void(Writer&)>& body) {
    std::vector<uint8_t> msg;
    Writer w(msg);
    w.Begin(type, ++tag_);
    body(w);
    w.Finish();
    Reply r{transport_(msg, max_reply)};
    EXPECT_EQ(r.size_field(), r.bytes.size());
    EXPECT_TRUE(r.type() == type + 1 || r.type() == kRlerror) << "reply type " << int(r.type());
    return r;
  }
  Reply Raw(const std::vector<uint8_t>& msg) { return Reply{transport_(msg, max_reply)}; }

  uint32_t Version(uint32_t msize, const std::string& version = "9P2000.L", std::string* got = nullptr) {
    Reply r = Call(kTversion, [&](Writer& w) { w.U32(msize), w.Str(version); });
    if (r.error()) return 0;
    Reader b = r.Body();
    uint32_t m = b.U32();
    if (got) *got = b.Str();
    return m;
  }
  uint32_t Attach(uint32_t fid, uint32_t uid = 0, const std::string& aname = "", Qid* qid = nullptr) {
    Reply r = Call(kTattach, [&](Writer& w) { w.U32(fid), w.U32(kNoFid), w.Str("root"), w.Str(aname), w.U32(uid); });
    if (!r.error() && qid) *qid = r.Body().ReadQid();
    return r.error();
  }
  // 0 on a complete walk; the Rlerror code; or ~count of qids on a partial walk.
  uint32_t Walk(uint32_t fid, uint32_t newfid, const std::vector<std::string>& names, std::vector<Qid>* qids = nullptr) {
    Reply r = Call(kTwalk, [&](Writer& w) {
      w.U32(fid), w.U32(newfid), w.U16(static_cast<uint16_t>(names.size()));
      for (auto& n : names) w.Str(n);
    });
    if (r.error()) return r.error();
    Reader b = r.Body();
    uint16_t n = b.U16();
    for (uint16_t i = 0; i < n; i++) {
      Qid q = b.ReadQid();
      if (qids) qids->push_back(q);
    }
    return n == names.size() ? 0 : ~uint32_t(n);
  }
  uint32_t Open(uint32_t fid, uint32_t flags) {
    return Call(kTlopen, [&](Writer& w) { w.U32(fid), w.U32(flags); }).error();
  }
  uint32_t Create(uint32_t fid, const std::string& name, uint32_t flags, uint32_t mode, uint32_t gid) {
    return Call(kTlcreate, [&](Writer& w) { w.U32(fid), w.Str(name), w.U32(flags), w.U32(mode), w.U32(gid); }).error();
  }
  uint32_t Mkdir(uint32_t dfid, const std::string& name, uint32_t mode, uint32_t gid) {
    return Call(kTmkdir, [&](Writer& w) { w.U32(dfid), w.Str(name), w.U32(mode), w.U32(gid); }).error();
  }
  uint32_t Clunk(uint32_t fid) { return Call(kTclunk, [&](Writer& w) { w.U32(fid); }).error(); }
  uint32_t WriteData(uint32_t fid, uint64_t offset, const std::string& data, uint32_t* count = nullptr) {
    Reply r = Call(kTwrite, [&](Writer& w) {
      w.U32(fid), w.U64(offset), w.U32(static_cast<uint32_t>(data.size())), w.Bytes(data.data(), data.size());
    });
    if (!r.error() && count) *count = r.Body().U32();
    return r.error();
  }
  uint32_t ReadData(uint32_t fid, uint64_t offset, uint32_t count, std::string* out) {
    Reply r = Call(kTread, [&](Writer& w) { w.U32(fid), w.U64(offset), w.U32(count); });
    if (r.error()) return r.error();
    Reader b = r.Body();
    uint32_t n = b.U32();
    const uint8_t* p = b.Bytes(n);
    out->assign(reinterpret_cast<const char*>(p), n);
    return 0;
  }
  uint32_t Getattr(uint32_t fid, Attr* a) {
    Reply r = Call(kTgetattr, [&](Writer& w) { w.U32(fid), w.U64(0x3fff); });
    if (r.error()) return r.error();
    Reader b = r.Body();
    a->valid = b.U64();
    a->qid = b.ReadQid();
    a->mode = b.U32(), a->uid = b.U32(), a->gid = b.U32();
    a->nlink = b.U64(), a->rdev = b.U64(), a->size = b.U64(), a->blksize = b.U64(), a->blocks = b.U64();
    a->atime_sec = b.U64(), a->atime_nsec = b.U64(), a->mtime_sec = b.U64(), a->mtime_nsec = b.U64();
    return 0;
  }
  uint32_t Setattr(uint32_t fid, uint32_t valid, uint32_t mode, uint32_t uid, uint32_t gid, uint64_t size,
                   uint64_t atime = 0, uint64_t mtime = 0) {
    return Call(kTsetattr, [&](Writer& w) {
             w.U32(fid), w.U32(valid), w.U32(mode), w.U32(uid), w.U32(gid), w.U64(size);
             w.U64(atime), w.U64(0), w.U64(mtime), w.U64(0);
           }).error();
  }
  uint32_t Readdir(uint32_t fid, uint64_t offset, uint32_t count, std::vector<Dirent>* out) {
    Reply r = Call(kTreaddir, [&](Writer& w) { w.U32(fid), w.U64(offset), w.U32(count); });
    if (r.error()) return r.error();
    Reader b = r.Body();
    uint32_t n = b.U32();
    Reader entries(b.Bytes(n), n);
    while (entries.remaining()) {
      Dirent d;
      d.qid = entries.ReadQid();
      d.offset = entries.U64();
      d.type = entries.U8();
      d.name = entries.Str();
      out->push_back(d);
    }
    return 0;
  }
  // Every entry name of a directory fid (opened here), listing `count` bytes at a time.
  std::vector<std::string> ListDir(uint32_t fid, uint32_t count) {
    std::vector<std::string> names;
    uint64_t offset = 0;
    for (int guard = 0; guard < 10000; guard++) {
      std::vector<Dirent> batch;
      if (Readdir(fid, offset, count, &batch) != 0 || batch.empty()) break;
      for (auto& d : batch) names.push_back(d.name);
      offset = batch.back().offset;
    }
    return names;
  }

 private:
  Transport transport_;
  uint16_t tag_ = 0;
};

class ScratchDir {
 public:
  ScratchDir() {
    char tmpl[] = "/tmp/stencil-p9-test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }
  stencil::UniqueFd OpenRoot() const { return stencil::UniqueFd(open(path_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)); }
  void WriteFile(const std::string& rel, const std::string& data) const { std::ofstream(*this / rel) << data; }
  std::string ReadFile(const std::string& rel) const {
    std::ifstream in(*this / rel);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

 private:
  std::string path_;
};

}  // namespace p9test
