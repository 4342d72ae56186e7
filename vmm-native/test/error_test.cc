// Formatting helpers of error messages.
#include <gtest/gtest.h>

#include "../src/error.h"

using stencil::Hex;

TEST(Hex, FormatsInBase16WithoutPadding) {
  EXPECT_EQ(Hex(0), "0x0");
  EXPECT_EQ(Hex(31), "0x1f");
  EXPECT_EQ(Hex(0xc0000080), "0xc0000080");
  EXPECT_EQ(Hex(~0ULL), "0xffffffffffffffff");
}
