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
        const TensorView* bias_view = bias_kind == 0 ? nullptr : &bias.view;
        std::vector<float> x = RandomVector(c.tokens * c.in, &rng_);
        std::vector<float> y(c.tokens * c.out, -1.0f);
        backend_.MatMul(x.data(), c.tokens, w.view, bias_view, y.data());
        ASSERT_TRUE(MatchesNaiveMatMul(w, bias_view != nullptr ? &bias : nullptr, x, c.tokens, y));
      }
    }
  }
}

// Prepared (on AVX-512: packed) weights: the same results as the naive loop,
// any row count (partial panels) and token count (every token block size),
// and each token bit-identical to computing it alone or in any sub-batch.
TEST_P(CpuBackendTest, PreparedMatMulMatchesNaiveLoopAndIsBatchInvariant) {
  struct Case {
    int64_t out, in, tokens;
  };
  const Case cases[] = {{16, 1, 1},    {17, 13, 3},  {32, 64, 12},  {75, 37, 13},
                        {130, 64, 70}, {300, 48, 9}, {64, 257, 25}, {200, 33, 2}};
  size_t prepared = 0;
  std::vector<std::unique_ptr<OwnedTensor>> weights;
  for (const Case& c : cases) {
    for (DType wt : {DType::kF32, DType::kBF16}) {
      for (int bias_kind = 0; bias_kind < 3; ++bias_kind) {
        SCOPED_TRACE(absl::StrCat("out=", c.out, " in=", c.in, " T=", c.tokens,
                                  " w=", DTypeName(wt), " bias=", bias_kind));
        // Prepared weights stay alive (at their address) while the backend may
        // use them: it knows them by address.
        weights.push_back(std::make_unique<OwnedTensor>(MakeTensor({c.out, c.in}, wt, &rng_)));
        const OwnedTensor& w = *weights.back();
        const TensorView* views[] = {&w.view};
        backend_.PrepareMatMulWeights(views);
        ++prepared;
        OwnedTensor bias = MakeTensor({c.out}, bias_kind == 2 ? DType::kBF16 : DType::kF32, &rng_);
        const TensorView* bias_view = bias_kind == 0 ? nullptr : &bias.view;
        std::vector<float> x = RandomVector(c.tokens * c.in, &rng_);
        std::vector<float> y(c.tokens * c.out, -1.0f);
        backend_.MatMul(x.data(), c.tokens, w.view, bias_view, y.data());
        ASSERT_TRUE(MatchesNaiveMatMul(w, bias_view != nullptr ? &bias : nullptr, x, c.tokens, y));
        // Sub-batches: each token alone, and a window of up to 5 tokens.
        for (int64_t t = 0; t < c.tokens; ++t) {
          const int64_t n = std::min<int64_t>(t % 2 == 0 ? 1 : 5, c.tokens - t);
          std::vector<float> ys(n * c.out, -1.0f);
          backend_.MatMul(x.data() + t * c.in, n, w.view, bias_view, ys.data());
          ASSERT_EQ(0, std::memcmp(ys.data(), y.data() + t * c.out, ys.size() * sizeof(float)))
              << "tokens [" << t << ", " << t + n << ") differ from the full batch";
        }
      }
    }
  }
  // The packed kernels exist for AVX-512 only; elsewhere nothing is packed.
  EXPECT_EQ(backend_.packed_weights(), backend_.isa() == CpuIsa::kAvx512 ? prepared : 0u);
}

INSTANTIATE_CPU_BACKEND_TEST_SUITE(CpuBackendTest);

}  // namespace
}  // namespace memserve
