#include "../src/migration/checksum.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace stencil {
namespace {

TEST(Checksum, Crc32cOfTheStandardCheckInput) {
  const char* check = "123456789";
  EXPECT_EQ(Crc32c(0, check, 9), 0xe3069283u);
  EXPECT_EQ(Crc32cPortable(0, check, 9), 0xe3069283u);
  EXPECT_EQ(Crc32c(0, check, 0), 0u);
}

TEST(Checksum, PiecesMakeTheWholeAndBothImplementationsAgree) {
  std::mt19937 rng(7);
  std::vector<uint8_t> data(70000);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  const uint32_t whole = Crc32cPortable(0, data.data(), data.size());
  EXPECT_EQ(Crc32c(0, data.data(), data.size()), whole);
  // Odd lengths from odd offsets, as stream fields come.
  StreamChecksum pieces;
  size_t at = 0;
  for (size_t len = 1; at < data.size(); len = len * 3 % 4099 + 1) {
    size_t n = std::min(len, data.size() - at);
    pieces.Update(data.data() + at, n);
    EXPECT_EQ(Crc32c(0, data.data() + at, n), Crc32cPortable(0, data.data() + at, n)) << "at " << at << " length " << n;
    at += n;
  }
  EXPECT_EQ(pieces.value(), whole);
  data[12345] ^= 0x10;
  EXPECT_NE(Crc32c(0, data.data(), data.size()), whole) << "a flipped bit changes the checksum";
}

}  // namespace
}  // namespace stencil
