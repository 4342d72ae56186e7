// Little-endian byte encoding for saved state. Every read is bounds-checked: a truncated or
// corrupt input raises VmmError(kSnapshot) naming what was being read, never reads past the end.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace stencil {

class ByteWriter {
 public:
  void U8(uint8_t v) { Raw(&v, 1); }
  void U16(uint16_t v) { Raw(&v, 2); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  void String(const std::string& s);
  void Blob(const std::vector<uint8_t>& b);
  // A fixed-layout kernel struct (kvm_regs, ...), stored with its size so a layout change is caught.
  template <typename T>
  void Pod(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>, "Pod needs a trivially copyable type");
    U32(sizeof(T));
    Raw(&v, sizeof(T));
  }
  void Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    data_.insert(data_.end(), b, b + n);
  }
  const std::vector<uint8_t>& data() const { return data_; }
  std::vector<uint8_t> Take() { return std::move(data_); }

 private:
  std::vector<uint8_t> data_;
};

class ByteReader {
 public:
  // `context` names the input in errors ("state section vcpu.0").
  ByteReader(const uint8_t* data, size_t size, std::string context)
      : data_(data), size_(size), context_(std::move(context)) {}
  explicit ByteReader(const std::vector<uint8_t>& v, std::string context)
      : ByteReader(v.data(), v.size(), std::move(context)) {}

  uint8_t U8() { uint8_t v; Raw(&v, 1, "u8"); return v; }
  uint16_t U16() { uint16_t v; Raw(&v, 2, "u16"); return v; }
  uint32_t U32() { uint32_t v; Raw(&v, 4, "u32"); return v; }
  uint64_t U64() { uint64_t v; Raw(&v, 8, "u64"); return v; }
  bool Bool();
  std::string String();
  std::vector<uint8_t> Blob();
  // A u32 element count, refused above `max` (a corrupt count must not drive a huge allocation).
  uint32_t Count(uint32_t max, const char* what);
  template <typename T>
  void Pod(T* out, const char* what) {
    static_assert(std::is_trivially_copyable_v<T>, "Pod needs a trivially copyable type");
    uint32_t size = U32();
    if (size != sizeof(T)) Fail(std::string(what) + " has size " + std::to_string(size) + ", expected " + std::to_string(sizeof(T)));
    Raw(out, sizeof(T), what);
  }
  void Raw(void* out, size_t n, const char* what);
  // Throws unless every byte was consumed (trailing bytes mean a format mismatch).
  void ExpectEnd() const;
  size_t remaining() const { return size_ - pos_; }
  [[noreturn]] void Fail(const std::string& why) const;

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string context_;
};

}  // namespace stencil
