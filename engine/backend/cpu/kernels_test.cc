// The row kernels' contracts (kernels.h) on every instruction-set level this
// CPU has: axpy_rows is bit for bit count successive axpy calls, dot_rows is
// each row's dot product within float rounding, and the bf16-row variants
// equal the f32 ones on the widened rows.
#include "engine/backend/cpu/kernels.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_isa.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

class RowKernelsTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  const CpuKernels& kern_ = KernelsFor(GetParam());
  std::mt19937 rng_{7};

  std::vector<float> Random(int64_t n) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng_);
    return v;
  }
};

struct Shape {
  int64_t n, count, stride;
};
// Widths around the kernels' blocks (8, 16, 64 lanes), row counts from none
// to long contexts.
const Shape kShapes[] = {{1, 1, 1},    {7, 3, 9},      {8, 5, 8},     {64, 1, 64}, {64, 300, 64},
                         {72, 17, 80}, {128, 40, 256}, {200, 9, 203}, {16, 0, 16}, {130, 64, 130}};

TEST_P(RowKernelsTest, AxpyRowsIsSuccessiveAxpys) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(absl::StrCat("n=", s.n, " count=", s.count, " stride=", s.stride));
    const std::vector<float> rows = Random(std::max<int64_t>(1, s.count) * s.stride);
    const std::vector<float> coef = Random(std::max<int64_t>(1, s.count));
    const std::vector<float> y0 = Random(s.n);
    std::vector<uint16_t> rows_bf16(rows.size());
    std::vector<float> rows_widened(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      rows_bf16[i] = F32ToBf16(rows[i]);
      rows_widened[i] = Bf16ToF32(rows_bf16[i]);
    }
    std::vector<float> want = y0, want_bf16 = y0;
    for (int64_t i = 0; i < s.count; ++i) {
      kern_.axpy_f32(coef[i], rows.data() + i * s.stride, want.data(), s.n);
      kern_.axpy_f32(coef[i], rows_widened.data() + i * s.stride, want_bf16.data(), s.n);
    }
    std::vector<float> got = y0, got_bf16 = y0;
    kern_.axpy_rows(coef.data(), rows.data(), s.stride, s.count, got.data(), s.n);
    kern_.axpy_rows_bf16(coef.data(), rows_bf16.data(), s.stride, s.count, got_bf16.data(), s.n);
    for (int64_t c = 0; c < s.n; ++c) {
      ASSERT_EQ(got[c], want[c]) << "column " << c;
      ASSERT_EQ(got_bf16[c], want_bf16[c]) << "column " << c << " (bf16 rows)";
    }
  }
}

TEST_P(RowKernelsTest, DotRowsAreScaledDotProducts) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(absl::StrCat("n=", s.n, " count=", s.count, " stride=", s.stride));
    const std::vector<float> rows = Random(std::max<int64_t>(1, s.count) * s.stride);
    const std::vector<float> q = Random(s.n);
    std::vector<uint16_t> rows_bf16(rows.size());
    std::vector<float> rows_widened(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      rows_bf16[i] = F32ToBf16(rows[i]);
      rows_widened[i] = Bf16ToF32(rows_bf16[i]);
    }
    const float scale = 0.125f;
    std::vector<float> got(s.count + 1, -7.0f), got_widened(s.count + 1, -7.0f),
        got_bf16(s.count + 1, -7.0f);
    kern_.dot_rows(q.data(), rows.data(), s.stride, s.count, s.n, scale, got.data());
    kern_.dot_rows(q.data(), rows_widened.data(), s.stride, s.count, s.n, scale,
                   got_widened.data());
    kern_.dot_rows_bf16(q.data(), rows_bf16.data(), s.stride, s.count, s.n, scale, got_bf16.data());
    for (int64_t i = 0; i < s.count; ++i) {
      double want = 0, mag = 0;
      for (int64_t k = 0; k < s.n; ++k) {
        want += double{q[k]} * rows[i * s.stride + k];
        mag += std::fabs(double{q[k]} * rows[i * s.stride + k]);
      }
      EXPECT_NEAR(got[i], want * scale, 1e-6 * mag + 1e-7) << "row " << i;
      EXPECT_EQ(got_bf16[i], got_widened[i]) << "row " << i << " (bf16 rows)";
    }
    EXPECT_EQ(got[s.count], -7.0f) << "wrote past count";
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, RowKernelsTest, ::testing::ValuesIn(SupportedCpuIsas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) {
                           return std::string(CpuIsaName(info.param));
                         });

}  // namespace
}  // namespace memserve
