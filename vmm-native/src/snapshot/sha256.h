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

}  // namespace stencil
