#include "sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <memory>

#include "../error.h"
#include "../fd.h"

namespace stencil {

namespace {
using DigestContext = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

DigestContext NewContext() {
  DigestContext ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw VmmError(ErrorCode::kSnapshot, "cannot initialise SHA-256 (libcrypto)");
  return ctx;
}

Sha256Digest Finish(EVP_MD_CTX* ctx) {
  Sha256Digest d{};
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, d.data(), &n);
  return d;
}
}  // namespace

Sha256Digest Sha256(const uint8_t* data, size_t size) {
  DigestContext ctx = NewContext();
  EVP_DigestUpdate(ctx.get(), data, size);
  return Finish(ctx.get());
}

std::string Sha256FileHex(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw VmmError(ErrorCode::kSnapshot, WithErrno("hashing " + path));
  DigestContext ctx = NewContext();
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    ssize_t n = read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw VmmError(ErrorCode::kSnapshot, WithErrno("reading " + path + " to hash it"));
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
  }
  Sha256Digest d = Finish(ctx.get());
  return ToHex(d.data(), d.size());
}

std::string ToHex(const uint8_t* data, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(size * 2);
  for (size_t i = 0; i < size; i++) s += kDigits[data[i] >> 4], s += kDigits[data[i] & 15];
  return s;
}

Sha256Stream::Sha256Stream() : ctx_(NewContext().release()) {}

Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256Stream::Update(const void* data, size_t size) { EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size); }

Sha256Digest Sha256Stream::Finish() {
  Sha256Digest d = stencil::Finish(static_cast<EVP_MD_CTX*>(ctx_));
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
  return d;
}

}  // namespace stencil
