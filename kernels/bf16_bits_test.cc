// The kernels' fp32 <-> bf16 conversions (kernels/bf16_bits.h, used on the
// device) against the CPU backend's (engine/dtype.h), bit for bit.
#include "kernels/bf16_bits.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace memserve::kernels {
namespace {

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

TEST(Bf16BitsTest, MatchesTheCpuBackendOnRandomBitPatterns) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 1000000; ++i) {
    const uint32_t bits = any(rng);
    const float f = FromBits(bits);
    ASSERT_EQ(F32ToBf16Bits(f), memserve::F32ToBf16(f)) << "fp32 bits 0x" << std::hex << bits;
  }
  for (uint32_t v = 0; v <= 0xffff; ++v) {
    const float a = Bf16BitsToF32(static_cast<uint16_t>(v));
    const float b = memserve::Bf16ToF32(static_cast<uint16_t>(v));
    ASSERT_EQ(std::memcmp(&a, &b, sizeof(a)), 0) << v;
  }
}

TEST(Bf16BitsTest, RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between 1 and the next bf16 (1 + 2^-7): ties go to
  // the even one, 1. Just above halfway rounds up.
  EXPECT_EQ(F32ToBf16Bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(F32ToBf16Bits(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  // 1 + 3 * 2^-8 is halfway between 0x3f81 and 0x3f82: to the even 0x3f82.
  EXPECT_EQ(F32ToBf16Bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(F32ToBf16Bits(-2.0f), 0xc000);
  // The largest finite fp32 rounds to infinity; infinities and signed zeros stay.
  EXPECT_EQ(F32ToBf16Bits(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(F32ToBf16Bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(F32ToBf16Bits(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(F32ToBf16Bits(-0.0f), 0x8000);
  // A NaN whose payload lies only in the low bits stays a NaN (not infinity).
  const uint16_t nan = F32ToBf16Bits(FromBits(0x7f800001u));
  EXPECT_TRUE(std::isnan(Bf16BitsToF32(nan)));
  EXPECT_TRUE(std::isnan(Bf16BitsToF32(F32ToBf16Bits(FromBits(0xffc00000u)))));
}

}  // namespace
}  // namespace memserve::kernels
