// fp32 <-> bf16 conversion on the GPU vs engine/dtype.h's F32ToBf16 /
// Bf16ToF32, bit for bit (skips without a GPU); the parameter validation
// runs everywhere.
#include "kernels/convert.h"

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/dtype.h"
#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"

namespace memserve::kernels {
namespace {

TEST(ConvertParamsTest, ValidateNamesTheField) {
  float f[4] = {};
  uint16_t b[4] = {};
  F32ToBf16Params to;
  EXPECT_TRUE(StatusMentions(to.Validate(), "F32ToBf16Params.x is null"));
  to.x = f;
  to.y = b;
  to.n = -1;
  EXPECT_TRUE(StatusMentions(LaunchF32ToBf16(to, nullptr), "F32ToBf16Params.n must be in"));
  to.n = 4;
  EXPECT_TRUE(to.Validate().ok());
  Bf16ToF32Params from;
  from.x = b;
  EXPECT_TRUE(StatusMentions(from.Validate(), "Bf16ToF32Params.y is null"));
}

// Random bit patterns (NaNs, infinities, subnormals included) plus special
// values, converted at an element offset (0: vector path; 1: scalar path).
TEST(ConvertTest, MatchesTheCpuConversionsBitForBit) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(6);
  std::uniform_int_distribution<uint32_t> any;
  for (int64_t n : {1, 5, 1003, 1 << 20}) {
    for (int offset : {0, 1}) {
      SCOPED_TRACE(testing::Message() << "n " << n << " offset " << offset);
      std::vector<float> x(n + offset);
      for (float& v : x) {
        const uint32_t bits = any(rng);
        std::memcpy(&v, &bits, sizeof(v));
      }
      x[offset] = 1.0f + 1.0f / 256;  // a tie: rounds to even
      std::vector<uint16_t> want(n);
      for (int64_t i = 0; i < n; ++i) want[i] = F32ToBf16(x[offset + i]);

      DeviceArray<float> dx(x), dback(n + offset);
      DeviceArray<uint16_t> dy(n + offset);
      F32ToBf16Params to;
      to.x = dx.get() + offset;
      to.y = dy.get() + offset;
      to.n = n;
      ASSERT_TRUE(LaunchF32ToBf16(to, nullptr).ok());
      std::vector<uint16_t> got = dy.Read();
      got.erase(got.begin(), got.begin() + offset);
      EXPECT_EQ(got, want);

      Bf16ToF32Params from;
      from.x = dy.get() + offset;
      from.y = dback.get() + offset;
      from.n = n;
      ASSERT_TRUE(LaunchBf16ToF32(from, nullptr).ok());
      std::vector<float> back = dback.Read();
      back.erase(back.begin(), back.begin() + offset);
      std::vector<float> want_back(n);
      for (int64_t i = 0; i < n; ++i) want_back[i] = Bf16ToF32(want[i]);
      EXPECT_EQ(BitMismatches(back, want_back), 0);
    }
  }
}

}  // namespace
}  // namespace memserve::kernels
