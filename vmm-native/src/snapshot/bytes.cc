#include "bytes.h"

#include "../error.h"

namespace stencil {

namespace {
constexpr uint32_t kMaxVariableLength = 64u << 20;  // no field is this big: anything larger is corruption
}

void ByteWriter::String(const std::string& s) {
  U32(static_cast<uint32_t>(s.size()));
  Raw(s.data(), s.size());
}

void ByteWriter::Blob(const std::vector<uint8_t>& b) {
  U32(static_cast<uint32_t>(b.size()));
  Raw(b.data(), b.size());
}

bool ByteReader::Bool() {
  uint8_t v = U8();
  if (v > 1) Fail("boolean field holds " + std::to_string(v));
  return v == 1;
}

std::string ByteReader::String() {
  uint32_t n = U32();
  if (n > kMaxVariableLength || n > remaining()) Fail("string of " + std::to_string(n) + " bytes runs past the end");
  std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
  pos_ += n;
  return s;
}

std::vector<uint8_t> ByteReader::Blob() {
  uint32_t n = U32();
  if (n > kMaxVariableLength || n > remaining()) Fail("blob of " + std::to_string(n) + " bytes runs past the end");
  std::vector<uint8_t> b(data_ + pos_, data_ + pos_ + n);
  pos_ += n;
  return b;
}

uint32_t ByteReader::Count(uint32_t max, const char* what) {
  uint32_t n = U32();
  if (n > max) Fail(std::to_string(n) + " " + what + " (at most " + std::to_string(max) + ")");
  return n;
}

void ByteReader::Raw(void* out, size_t n, const char* what) {
  if (n > remaining())
    Fail(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes at offset " +
         std::to_string(pos_) + ", " + std::to_string(remaining()) + " left");
  std::memcpy(out, data_ + pos_, n);
  pos_ += n;
}

void ByteReader::ExpectEnd() const {
  if (remaining() != 0) Fail(std::to_string(remaining()) + " unexpected trailing bytes");
}

void ByteReader::Fail(const std::string& why) const { throw VmmError(ErrorCode::kSnapshot, context_ + ": " + why); }

}  // namespace stencil
