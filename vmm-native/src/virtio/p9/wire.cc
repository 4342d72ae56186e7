#include "wire.h"

#include <cstring>

namespace stencil::p9 {

namespace {
constexpr size_t kNameMax = 255;
}

const uint8_t* Reader::Take(size_t n) {
  if (n > remaining()) throw ProtocolError{EPROTO, "message truncated"};
  const uint8_t* p = p_;
  p_ += n;
  return p;
}

uint8_t Reader::U8() { return *Take(1); }

uint16_t Reader::U16() {
  const uint8_t* p = Take(2);
  return static_cast<uint16_t>(p[0] | p[1] << 8);
}

uint32_t Reader::U32() {
  const uint8_t* p = Take(4);
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

uint64_t Reader::U64() {
  uint64_t low = U32();
  return low | uint64_t(U32()) << 32;
}

Qid Reader::ReadQid() {
  Qid q;
  q.type = U8();
  q.version = U32();
  q.path = U64();
  return q;
}

std::string Reader::Str() {
  uint16_t len = U16();
  if (len > remaining()) throw ProtocolError{EPROTO, "string runs past the end of the message"};
  const uint8_t* p = Take(len);
  return std::string(reinterpret_cast<const char*>(p), len);
}

std::string Reader::Name(bool allow_dots) {
  std::string s = Str();
  if (s.empty() || s.size() > kNameMax) throw ProtocolError{s.empty() ? EINVAL : ENAMETOOLONG, "bad name length"};
  if (s.find('/') != std::string::npos || s.find('\0') != std::string::npos)
    throw ProtocolError{EINVAL, "name contains '/' or NUL"};
  if (!allow_dots && (s == "." || s == "..")) throw ProtocolError{EINVAL, "name is . or .."};
  return s;
}

const uint8_t* Reader::Bytes(size_t n) { return Take(n); }

void Writer::Begin(uint8_t type, uint16_t tag) {
  start_ = out_.size();
  U32(0);
  U8(type);
  U16(tag);
}

void Writer::Finish() {
  uint32_t size = static_cast<uint32_t>(out_.size() - start_);
  for (int i = 0; i < 4; i++) out_[start_ + i] = static_cast<uint8_t>(size >> (8 * i));
}

void Writer::PatchU32(size_t message_offset, uint32_t v) {
  for (int i = 0; i < 4; i++) out_[start_ + message_offset + i] = static_cast<uint8_t>(v >> (8 * i));
}

void Writer::U16(uint16_t v) {
  out_.push_back(static_cast<uint8_t>(v));
  out_.push_back(static_cast<uint8_t>(v >> 8));
}

void Writer::U32(uint32_t v) {
  for (int i = 0; i < 4; i++) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void Writer::U64(uint64_t v) {
  for (int i = 0; i < 8; i++) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void Writer::Str(const std::string& s) {
  U16(static_cast<uint16_t>(s.size()));
  Bytes(s.data(), s.size());
}

void Writer::WriteQid(const Qid& q) {
  U8(q.type);
  U32(q.version);
  U64(q.path);
}

void Writer::Bytes(const void* data, size_t n) {
  if (n) std::memcpy(Grow(n), data, n);
}

uint8_t* Writer::Grow(size_t n) {
  size_t at = out_.size();
  out_.resize(at + n);
  return out_.data() + at;
}

std::vector<uint8_t> EncodeLerror(uint16_t tag, uint32_t ecode) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.Begin(kRlerror, tag);
  w.U32(ecode);
  w.Finish();
  return out;
}

}  // namespace stencil::p9
