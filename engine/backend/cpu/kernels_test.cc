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
    // A row's result does not depend on the rows beside it (the kernels sum
    // several rows together).
    for (int64_t i = 0; i < s.count; ++i) {
      float alone = 0.0f;
      kern_.dot_rows(q.data(), rows.data() + i * s.stride, s.stride, 1, s.n, scale, &alone);
      EXPECT_EQ(got[i], alone) << "row " << i;
    }
  }
}

// softmax: each weight within 4 + n ulp of exp(x - max) / sum (x - max in
// float, the rest in double), where
// the exponent is in the normal range (a weight whose numerator is below it
// comes out at most that small); nothing written past n. Every length around
// the vector widths, a few orders of magnitude of spread, -inf entries (a
// weight of 0).
TEST_P(RowKernelsTest, SoftmaxIsExpOverSum) {
  std::mt19937 rng(9);
  for (float spread : {1.0f, 30.0f, 200.0f}) {
    std::uniform_real_distribution<float> dist(-spread, spread);
    for (int64_t n : {1, 2, 7, 8, 9, 15, 16, 17, 33, 64, 257}) {
      SCOPED_TRACE(absl::StrCat("n=", n, " spread=", spread));
      std::vector<float> x(n + 1);
      for (float& v : x) v = dist(rng);
      if (n > 3) x[2] = -__builtin_inff();
      const std::vector<float> in = x;
      x[n] = -7.0f;
      kern_.softmax(x.data(), n);
      float max = in[0];
      for (int64_t i = 1; i < n; ++i) max = std::max(max, in[i]);
      // (x - max rounded to float as the kernels do: exp then multiplies
      // that rounding error by up to |x - max| ulp.)
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += std::exp(double{in[i] - max});
      for (int64_t i = 0; i < n; ++i) {
        const double e = std::exp(double{in[i] - max});
        const double want = e / sum;
        if (e < 1.1754944e-38) {
          EXPECT_LE(x[i], 1.1754944e-38f) << "i=" << i;
        } else {
          // 4 ulp for exp and the division, plus the float sum's rounding
          // (at most n ulp).
          EXPECT_NEAR(x[i], want, (4 + n) * 5.96e-8 * want) << "i=" << i << " x=" << in[i];
        }
      }
      EXPECT_EQ(x[n], -7.0f) << "wrote past n";
    }
  }
  float nan[3] = {0.0f, std::nanf(""), 1.0f};
  kern_.softmax(nan, 3);
  EXPECT_TRUE(std::isnan(nan[0]) && std::isnan(nan[1]) && std::isnan(nan[2]));
}

// silu_mul: within 4 ulp of a / (1 + exp(-a)) * b in double.
TEST_P(RowKernelsTest, SiluMulIsSiluTimesB) {
  std::vector<float> a, b;
  for (float v = -100.0f; v <= 100.0f; v += 0.0371f) a.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, 88.8f, -88.8f, 1e30f, -1e30f}) a.push_back(v);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  for (size_t i = 0; i < a.size(); ++i) b.push_back(dist(rng));
  for (int64_t n :
       {int64_t{1}, int64_t{9}, int64_t{16}, int64_t{21}, static_cast<int64_t>(a.size())}) {
    std::vector<float> y(n + 1, -7.0f);
    kern_.silu_mul(a.data(), b.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = double{a[i]} / (1.0 + std::exp(-double{a[i]})) * b[i];
      // (Below a = -88.7 exp(-a) overflows: silu's tiny true value, under
      // 1e-36, comes out as -0.)
      EXPECT_NEAR(y[i], want, 4 * 5.96e-8 * std::fabs(want) + 1e-36) << "a=" << a[i];
    }
    EXPECT_EQ(y[n], -7.0f) << "wrote past n";
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, RowKernelsTest, ::testing::ValuesIn(SupportedCpuIsas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) {
                           return std::string(CpuIsaName(info.param));
                         });

}  // namespace
}  // namespace memserve
