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

// Int8 weights (I8 + a scale per 32-column block; converter --dtype int8):
// bit for bit the matmul of their F32 dequantization (float(int8) x scale)
// on every ISA and token count, packed or not, and refused where they
// cannot be used.
TEST_P(CpuBackendTest, Int8MatMulIsTheMatMulOfTheDequantizedWeight) {
  struct Case {
    int64_t out, in, tokens;
  };
  const Case cases[] = {{1, 32, 1},   {16, 64, 3},  {33, 96, 2},   {64, 256, 13},
                        {75, 32, 70}, {130, 64, 1}, {200, 128, 9}, {31, 160, 6}};
  std::uniform_int_distribution<int> q_dist(-127, 127);
  std::uniform_real_distribution<float> scale_dist(1e-4f, 0.02f);
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat("out=", c.out, " in=", c.in, " T=", c.tokens));
    const int64_t blocks = c.in / kInt8BlockSize;
    std::vector<int8_t> q(c.out * c.in);
    std::vector<float> scales(c.out * blocks);
    for (int8_t& v : q) v = static_cast<int8_t>(q_dist(rng_));
    for (float& v : scales) v = scale_dist(rng_);
    scales[0] = 0.0f;  // an all-zero block
    std::vector<float> dequantized(c.out * c.in);
    for (int64_t r = 0; r < c.out; ++r) {
      for (int64_t k = 0; k < c.in; ++k) {
        dequantized[r * c.in + k] =
            static_cast<float>(q[r * c.in + k]) * scales[r * blocks + k / kInt8BlockSize];
      }
    }
    TensorView i8;
    i8.name = "w_i8";
    i8.dtype = DType::kI8;
    i8.shape = {c.out, c.in};
    i8.data = q.data();
    i8.scales = scales.data();
    TensorView f32 = i8;
    f32.name = "w_f32";
    f32.dtype = DType::kF32;
    f32.data = dequantized.data();
    f32.scales = nullptr;
    Tensor w_i8, w_f32;
    absl::StatusOr<std::unique_ptr<Buffer>> b_i8 =
        backend_.PlaceWeight(i8, WeightUse::kMatMul, &w_i8);
    absl::StatusOr<std::unique_ptr<Buffer>> b_f32 =
        backend_.PlaceWeight(f32, WeightUse::kMatMul, &w_f32);
    ASSERT_TRUE(b_i8.ok()) << b_i8.status();
    ASSERT_TRUE(b_f32.ok()) << b_f32.status();
    const std::vector<float> x = RandomVector(c.tokens * c.in, &rng_);
    const Tensor x_t = dev_.F32(x, {c.tokens, c.in});
    const Tensor y_i8 = dev_.Filled(DType::kF32, {c.tokens, c.out}, -1.0f);
    const Tensor y_f32 = dev_.Filled(DType::kF32, {c.tokens, c.out}, -1.0f);
    ASSERT_TRUE(backend_.MatMul(x_t, w_i8, Tensor(), y_i8).ok());
    ASSERT_TRUE(backend_.MatMul(x_t, w_f32, Tensor(), y_f32).ok());
    const std::vector<float> a = dev_.ReadF32(y_i8), b = dev_.ReadF32(y_f32);
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
        << "int8 and dequantized-f32 results differ";
  }
  // Refusals, naming the weight: not a matmul weight, no scales, columns
  // not a multiple of the block.
  std::vector<int8_t> q(16 * 40, 1);
  std::vector<float> scales(16 * 2, 1.0f);
  TensorView w;
  w.name = "bad_i8";
  w.dtype = DType::kI8;
  w.shape = {16, 32};
  w.data = q.data();
  w.scales = scales.data();
  Tensor t;
  absl::Status s = backend_.PlaceWeight(w, WeightUse::kOther, &t).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("bad_i8"), absl::string_view::npos) << s;
  w.scales = nullptr;
  EXPECT_EQ(backend_.PlaceWeight(w, WeightUse::kMatMul, &t).status().code(),
            absl::StatusCode::kInvalidArgument);
  w.scales = scales.data();
  w.shape = {16, 40};
  EXPECT_EQ(backend_.PlaceWeight(w, WeightUse::kMatMul, &t).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_CPU_BACKEND_TEST_SUITE(CpuBackendTest);

}  // namespace
}  // namespace memserve
