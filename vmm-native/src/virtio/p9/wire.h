// 9P2000.L wire format: message numbers, constants, and bounds-checked encoding/decoding.
// Every byte of a request is guest-controlled: Reader never reads past the message and reports
// truncation or bad lengths as ProtocolError(EPROTO), bad strings as ProtocolError(EINVAL); the
// server turns either into Rlerror. All integers are little-endian on the wire.
#pragma once
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace stencil::p9 {

enum MsgType : uint8_t {
  kTlerror = 6, kRlerror = 7,
  kTstatfs = 8, kRstatfs = 9,
  kTlopen = 12, kRlopen = 13,
  kTlcreate = 14, kRlcreate = 15,
  kTsymlink = 16, kRsymlink = 17,
  kTmknod = 18, kRmknod = 19,
  kTrename = 20, kRrename = 21,
  kTreadlink = 22, kRreadlink = 23,
  kTgetattr = 24, kRgetattr = 25,
  kTsetattr = 26, kRsetattr = 27,
  kTxattrwalk = 30, kRxattrwalk = 31,
  kTxattrcreate = 32, kRxattrcreate = 33,
  kTreaddir = 40, kRreaddir = 41,
  kTfsync = 50, kRfsync = 51,
  kTlock = 52, kRlock = 53,
  kTgetlock = 54, kRgetlock = 55,
  kTlink = 70, kRlink = 71,
  kTmkdir = 72, kRmkdir = 73,
  kTrenameat = 74, kRrenameat = 75,
  kTunlinkat = 76, kRunlinkat = 77,
  kTversion = 100, kRversion = 101,
  kTauth = 102, kRauth = 103,
  kTattach = 104, kRattach = 105,
  kTflush = 108, kRflush = 109,
  kTwalk = 110, kRwalk = 111,
  kTread = 116, kRread = 117,
  kTwrite = 118, kRwrite = 119,
  kTclunk = 120, kRclunk = 121,
  kTremove = 122, kRremove = 123,
};

constexpr uint32_t kNoFid = 0xffffffff;
constexpr uint16_t kNoTag = 0xffff;
constexpr uint32_t kNoUid = 0xffffffff;  // n_uname "not given"
constexpr size_t kHeaderSize = 7;         // size[4] type[1] tag[2]
constexpr size_t kMaxWalkNames = 16;      // MAXWELEM
constexpr size_t kQidSize = 13;
constexpr size_t kIoHeaderSize = 11;      // size[4] type[1] tag[2] count[4] (Rread, Rreaddir)

// Qid types.
constexpr uint8_t kQtDir = 0x80, kQtSymlink = 0x02, kQtFile = 0x00;

// Tgetattr request_mask / Rgetattr valid bits.
constexpr uint64_t kGetattrBasic = 0x000007ff;  // mode nlink uid gid rdev atime mtime ctime ino size blocks

// Tsetattr valid bits.
enum : uint32_t {
  kSetattrMode = 1, kSetattrUid = 2, kSetattrGid = 4, kSetattrSize = 8, kSetattrAtime = 16,
  kSetattrMtime = 32, kSetattrCtime = 64, kSetattrAtimeSet = 128, kSetattrMtimeSet = 256,
};

// Tlopen/Tlcreate flags ("dotl" flags: Linux's generic open flags, spelled out so the server
// does not depend on the host architecture's O_* values).
enum : uint32_t {
  kDotlRdonly = 0, kDotlWronly = 1, kDotlRdwr = 2, kDotlNoAccess = 3, kDotlAccMode = 3,
  kDotlCreate = 0100, kDotlExcl = 0200, kDotlNoctty = 0400, kDotlTrunc = 01000, kDotlAppend = 02000,
  kDotlNonblock = 04000, kDotlDsync = 010000, kDotlFasync = 020000, kDotlDirect = 040000,
  kDotlLargefile = 0100000, kDotlDirectory = 0200000, kDotlNofollow = 0400000, kDotlNoatime = 01000000,
  kDotlCloexec = 02000000, kDotlSync = 04000000,
};

// Tunlinkat flags (the Linux value of AT_REMOVEDIR).
constexpr uint32_t kDotlAtRemovedir = 0x200;

// Tlock/Tgetlock.
enum : uint8_t { kLockTypeRdlck = 0, kLockTypeWrlck = 1, kLockTypeUnlck = 2 };
enum : uint8_t { kLockSuccess = 0, kLockBlocked = 1, kLockError = 2, kLockGrace = 3 };

struct Qid {
  uint8_t type = 0;
  uint32_t version = 0;
  uint64_t path = 0;
  bool operator==(const Qid& o) const { return type == o.type && version == o.version && path == o.path; }
};

// A request the server cannot decode. `err` is the errno sent back in Rlerror.
struct ProtocolError {
  int err;
  const char* what;
};

class Reader {
 public:
  Reader(const uint8_t* data, size_t len) : p_(data), end_(data + len) {}
  uint8_t U8();
  uint16_t U16();
  uint32_t U32();
  uint64_t U64();
  Qid ReadQid();
  // A string (len[2] bytes): EPROTO if it runs past the message.
  std::string Str();
  // A string that must name one directory entry: 1..255 bytes, no '/' and no NUL (EINVAL).
  // "." and ".." are refused as well unless allow_dots (walk accepts them).
  std::string Name(bool allow_dots = false);
  // `n` raw bytes; EPROTO if fewer remain.
  const uint8_t* Bytes(size_t n);
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

 private:
  const uint8_t* Take(size_t n);
  const uint8_t* p_;
  const uint8_t* end_;
};

// Appends to a byte vector. Message(type, tag) ... Finish() frames one message.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  void Begin(uint8_t type, uint16_t tag);  // size placeholder + type + tag
  void Finish();                           // patches size[4] of the message begun last
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v);
  void U32(uint32_t v);
  void U64(uint64_t v);
  void Str(const std::string& s);  // caller guarantees s.size() <= 65535
  void WriteQid(const Qid& q);
  void Bytes(const void* data, size_t n);
  uint8_t* Grow(size_t n);  // n more bytes at the end, returned for the caller to fill
  size_t size() const { return out_.size() - start_; }  // bytes of the current message so far
  void Truncate(size_t message_size) { out_.resize(start_ + message_size); }
  void PatchU32(size_t message_offset, uint32_t v);  // overwrite 4 bytes written earlier

 private:
  std::vector<uint8_t>& out_;
  size_t start_ = 0;
};

// Rlerror tag ecode.
std::vector<uint8_t> EncodeLerror(uint16_t tag, uint32_t ecode);

}  // namespace stencil::p9
