// SHA-256 (OpenSSL's libcrypto) for the state file's checksum and the config's kernel/initrd hashes.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace stencil {

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest Sha256(const uint8_t* data, size_t size);
// Hashes a file in chunks; throws VmmError(kSnapshot) naming the file if it cannot be read.
std::string Sha256FileHex(const std::string& path);
std::string ToHex(const uint8_t* data, size_t size);

// An incremental SHA-256 (a migration stream's checksum covers every byte as it goes by).
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void Update(const void* data, size_t size);
  Sha256Digest Finish();  // the digest of everything so far; the stream starts over

 private:
  void* ctx_;  // EVP_MD_CTX
};

}  // namespace stencil
