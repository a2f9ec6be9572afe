#include "engine/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace memserve {
namespace {

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_STREQ(DTypeName(DType::kF32), "F32");
  EXPECT_STREQ(DTypeName(DType::kBF16), "BF16");
}

TEST(DTypeTest, Bf16ExactValuesRoundTrip) {
  for (float f : {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 3.0f, 1024.0f, -2.5f, 65536.0f}) {
    EXPECT_EQ(Bf16ToF32(F32ToBf16(f)), f) << f;
  }
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(-2.0f), 0xc000);
  EXPECT_EQ(Bits(Bf16ToF32(F32ToBf16(-0.0f))), 0x80000000u);  // sign of zero kept
}

TEST(DTypeTest, RoundToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 1.0 (0x3f80, even) and 0x3f81.
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808000u)), 0x3f80);
  // 0x3f81 is odd: the halfway point above it rounds up to 0x3f82.
  EXPECT_EQ(F32ToBf16(FromBits(0x3f818000u)), 0x3f82);
  // Just above / below halfway.
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(F32ToBf16(FromBits(0x3f807fffu)), 0x3f80);
  // Negative numbers round by magnitude.
  EXPECT_EQ(F32ToBf16(FromBits(0xbf808000u)), 0xbf80);
  EXPECT_EQ(F32ToBf16(FromBits(0xbf818000u)), 0xbf82);
  // Mantissa carry into the exponent: 0x3fffffff rounds to 2.0.
  EXPECT_EQ(F32ToBf16(FromBits(0x3fffffffu)), 0x4000);
  // The largest finite float rounds to +inf (as IEEE rounding does).
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::max()), 0x7f80);
}

TEST(DTypeTest, InfAndNaN) {
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(F32ToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isinf(Bf16ToF32(0x7f80)));
  // NaN stays NaN, including NaNs whose payload lives only in the low bits
  // (naive truncation would turn 0x7f800001 into +inf).
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f80ffffu}) {
    const uint16_t b = F32ToBf16(FromBits(nan));
    EXPECT_TRUE(std::isnan(Bf16ToF32(b))) << std::hex << nan;
    EXPECT_EQ(b >> 15, nan >> 31) << "sign kept";
  }
}

TEST(DTypeTest, SubnormalsRound) {
  // bf16 keeps fp32's exponent range, so fp32 subnormals round like normals.
  EXPECT_EQ(F32ToBf16(FromBits(0x00008000u)), 0x0000);  // halfway, even -> down
  EXPECT_EQ(F32ToBf16(FromBits(0x00018000u)), 0x0002);  // halfway, odd -> up
  EXPECT_EQ(F32ToBf16(FromBits(0x00010000u)), 0x0001);
}

// Reference: the nearest bf16 by exhaustive comparison of neighbours.
TEST(DTypeTest, MatchesNearestOnRandomFloats) {
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t b = rng();
    const float f = FromBits(b);
    if (std::isnan(f)) continue;
    const uint16_t got = F32ToBf16(f);
    const uint16_t lo = static_cast<uint16_t>(b >> 16);  // truncation
    const uint16_t hi = static_cast<uint16_t>(lo + 1);
    const double dlo = std::fabs(static_cast<double>(Bf16ToF32(lo)) - f);
    const double dhi = std::fabs(static_cast<double>(Bf16ToF32(hi)) - f);
    uint16_t want = dlo < dhi ? lo : (dhi < dlo ? hi : ((lo & 1) ? hi : lo));
    if (std::isinf(Bf16ToF32(hi)) && !std::isinf(f)) {
      // Overflow beyond the largest bf16: IEEE rounds to inf only past halfway.
      want = (b & 0xffffu) >= 0x8000u ? hi : lo;
    }
    ASSERT_EQ(got, want) << std::hex << b;
  }
}

TEST(DTypeTest, ConvertToF32) {
  const std::vector<float> f32 = {1.0f, -2.5f, 3.25f, 0.0f};
  std::vector<float> out(4, -1.0f);
  ConvertToF32(DType::kF32, f32.data(), f32.size(), out.data());
  EXPECT_EQ(out, f32);
  std::vector<uint16_t> bf(f32.size());
  for (size_t i = 0; i < f32.size(); ++i) bf[i] = F32ToBf16(f32[i]);
  std::fill(out.begin(), out.end(), -1.0f);
  ConvertToF32(DType::kBF16, bf.data(), bf.size(), out.data());
  EXPECT_EQ(out, f32);
  ConvertToF32(DType::kBF16, bf.data(), 0, out.data());  // n = 0 is a no-op
}

}  // namespace
}  // namespace memserve
