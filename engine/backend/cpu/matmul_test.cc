// CpuBackend::MatMul (plain and packed weights) against a double-precision loop.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/cpu_backend_test_util.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

// y [tokens, out] against a double-precision loop over w [out, in], x
// [tokens, in] and bias [out] (or null), within 1e-5 of the products'
// magnitude.
::testing::AssertionResult MatchesNaiveMatMul(const OwnedTensor& w, const OwnedTensor* bias,
                                              const std::vector<float>& x, int64_t tokens,
                                              const std::vector<float>& y) {
  const int64_t out = w.view.shape[0], in = w.view.shape[1];
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double ref = 0.0, mag = 0.0;
      for (int64_t i = 0; i < in; ++i) {
        const double p = static_cast<double>(w.values[o * in + i]) * x[t * in + i];
        ref += p;
        mag += std::fabs(p);
      }
      if (bias != nullptr) ref += bias->values[o];
      if (!(std::fabs(y[t * out + o] - ref) <= 1e-5 * mag + 1e-6)) {
        return ::testing::AssertionFailure()
               << "t=" << t << " o=" << o << ": " << y[t * out + o] << " vs " << ref;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

TEST_P(CpuBackendTest, MatMulMatchesNaiveLoop) {
  struct Case {
    int64_t out, in, tokens;
  };
  const Case cases[] = {{1, 1, 1},     {7, 13, 1},    {33, 100, 3}, {64, 257, 5},
                        {130, 64, 70}, {16, 1024, 2}, {5, 31, 131}, {300, 48, 9}};
  for (const Case& c : cases) {
    for (DType wt : {DType::kF32, DType::kBF16}) {
      for (int bias_kind = 0; bias_kind < 3; ++bias_kind) {
        SCOPED_TRACE(absl::StrCat("out=", c.out, " in=", c.in, " T=", c.tokens,
                                  " w=", DTypeName(wt), " bias=", bias_kind));
        OwnedTensor w = MakeTensor({c.out, c.in}, wt, &rng_);
        OwnedTensor bias = MakeTensor({c.out}, bias_kind == 2 ? DType::kBF16 : DType::kF32, &rng_);
        const Tensor bias_t = bias_kind == 0 ? Tensor() : dev_.Weight(bias);
        std::vector<float> x = RandomVector(c.tokens * c.in, &rng_);
        const Tensor y_t = dev_.Filled(DType::kF32, {c.tokens, c.out}, -1.0f);
        ASSERT_TRUE(
            backend_.MatMul(dev_.F32(x, {c.tokens, c.in}), dev_.Weight(w), bias_t, y_t).ok());
        ASSERT_TRUE(MatchesNaiveMatMul(w, bias_kind == 0 ? nullptr : &bias, x, c.tokens,
                                       dev_.ReadF32(y_t)));
      }
    }
  }
}

// Weights placed for MatMul (on AVX2 and AVX-512: packed): the same results as the naive loop,
// any row count (partial panels) and token count (every token block size),
// and each token bit-identical to computing it alone or in any sub-batch.
TEST_P(CpuBackendTest, PreparedMatMulMatchesNaiveLoopAndIsBatchInvariant) {
  struct Case {
    int64_t out, in, tokens;
  };
  const Case cases[] = {{16, 1, 1},    {17, 13, 3},  {32, 64, 12},  {75, 37, 13},
                        {130, 64, 70}, {300, 48, 9}, {64, 257, 25}, {200, 33, 2}};
  int64_t prepared = 0;
  std::vector<std::unique_ptr<OwnedTensor>> weights;
  for (const Case& c : cases) {
    for (DType wt : {DType::kF32, DType::kBF16}) {
      for (int bias_kind = 0; bias_kind < 3; ++bias_kind) {
        SCOPED_TRACE(absl::StrCat("out=", c.out, " in=", c.in, " T=", c.tokens,
                                  " w=", DTypeName(wt), " bias=", bias_kind));
        // Placed weights may stay views of the host data: keep it alive.
        weights.push_back(std::make_unique<OwnedTensor>(MakeTensor({c.out, c.in}, wt, &rng_)));
        const OwnedTensor& w = *weights.back();
        const Tensor w_t = dev_.Weight(w, WeightUse::kMatMul);
        ++prepared;
        OwnedTensor bias = MakeTensor({c.out}, bias_kind == 2 ? DType::kBF16 : DType::kF32, &rng_);
        const Tensor bias_t = bias_kind == 0 ? Tensor() : dev_.Weight(bias);
        std::vector<float> x = RandomVector(c.tokens * c.in, &rng_);
        const Tensor x_t = dev_.F32(x, {c.tokens, c.in});
        const Tensor y_t = dev_.Filled(DType::kF32, {c.tokens, c.out}, -1.0f);
        ASSERT_TRUE(backend_.MatMul(x_t, w_t, bias_t, y_t).ok());
        const std::vector<float> y = dev_.ReadF32(y_t);
        ASSERT_TRUE(MatchesNaiveMatMul(w, bias_kind == 0 ? nullptr : &bias, x, c.tokens, y));
        // Sub-batches: each token alone, and a window of up to 5 tokens.
        for (int64_t t = 0; t < c.tokens; ++t) {
          const int64_t n = std::min<int64_t>(t % 2 == 0 ? 1 : 5, c.tokens - t);
          const Tensor ys_t = dev_.Filled(DType::kF32, {n, c.out}, -1.0f);
          ASSERT_TRUE(backend_.MatMul(x_t.Rows(t, n), w_t, bias_t, ys_t).ok());
          const std::vector<float> ys = dev_.ReadF32(ys_t);
          ASSERT_EQ(0, std::memcmp(ys.data(), y.data() + t * c.out, ys.size() * sizeof(float)))
              << "tokens [" << t << ", " << t + n << ") differ from the full batch";
        }
      }
    }
  }
  // The packed kernels exist for AVX2 and AVX-512; elsewhere nothing is packed.
  EXPECT_EQ(backend_.packed_weights(), backend_.isa() == CpuIsa::kGeneric ? 0 : prepared);
}

INSTANTIATE_CPU_BACKEND_TEST_SUITE(CpuBackendTest);

}  // namespace
}  // namespace memserve
