// CpuBackend's elementwise ops, RmsNorm, Embedding, RoPE and ISA selection
// against plain loops, for every ISA level and 1 and several threads.
#include "engine/backend/cpu/cpu_backend.h"

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
#include "engine/backend/cpu/cpu_backend_test_util.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

TEST_P(CpuBackendTest, UsesRequestedIsa) { EXPECT_EQ(backend_.isa(), std::get<0>(GetParam())); }

TEST_P(CpuBackendTest, RmsNormMatchesNaiveLoop) {
  for (DType wt : {DType::kF32, DType::kBF16}) {
    const int64_t dim = 37, tokens = 5;
    OwnedTensor w = MakeTensor({dim}, wt, &rng_);
    std::vector<float> x = RandomVector(tokens * dim, &rng_, 3.0f);
    const Tensor w_t = dev_.Weight(w);
    const Tensor y_t = dev_.Filled(DType::kF32, {tokens, dim});
    ASSERT_TRUE(backend_.RmsNorm(dev_.F32(x, {tokens, dim}), w_t, 1e-5f, y_t).ok());
    const std::vector<float> y = dev_.ReadF32(y_t);
    for (int64_t t = 0; t < tokens; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[t * dim + i]) * x[t * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int64_t i = 0; i < dim; ++i) {
        const double ref = x[t * dim + i] * inv * w.values[i];
        ASSERT_NEAR(y[t * dim + i], ref, 1e-5 * std::fabs(ref) + 1e-6);
      }
    }
    // In place.
    const Tensor z_t = dev_.F32(x, {tokens, dim});
    ASSERT_TRUE(backend_.RmsNorm(z_t, w_t, 1e-5f, z_t).ok());
    EXPECT_EQ(dev_.ReadF32(z_t), y);
  }
}

TEST_P(CpuBackendTest, EmbeddingCopiesRows) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    OwnedTensor table = MakeTensor({10, 6}, dt, &rng_);
    const std::vector<int32_t> ids = {3, 0, 9, 3};
    const Tensor y_t = dev_.Filled(DType::kF32, {4, 6});
    ASSERT_TRUE(backend_.Embedding(dev_.Weight(table), dev_.I32(ids, {4}), y_t).ok());
    const std::vector<float> y = dev_.ReadF32(y_t);
    for (size_t t = 0; t < ids.size(); ++t) {
      for (int i = 0; i < 6; ++i) ASSERT_EQ(y[t * 6 + i], table.values[ids[t] * 6 + i]);
    }
    // An id outside the table is an error, not a read out of bounds.
    EXPECT_EQ(backend_.Embedding(dev_.Weight(table), dev_.I32({10}, {1}), y_t.Rows(0, 1)).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(RopeTableTest, MatchesFp32Formula) {
  const int hd = 16;
  const float theta = 500000.0f;
  RopeTable table = RopeTable::Make(hd, 300, theta);
  ASSERT_EQ(table.cos.size(), 300u * 8u);
  for (int p : {0, 1, 17, 299}) {
    for (int i = 0; i < hd / 2; ++i) {
      const float freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / hd);
      const float angle = static_cast<float>(p) * freq;
      EXPECT_FLOAT_EQ(table.cos[p * 8 + i], std::cos(angle));
      EXPECT_FLOAT_EQ(table.sin[p * 8 + i], std::sin(angle));
      // And close to the exact angle (fp32 rounding only).
      const double exact = p * std::pow(static_cast<double>(theta), -2.0 * i / hd);
      EXPECT_NEAR(table.cos[p * 8 + i], std::cos(exact), 1e-4);
    }
  }
  EXPECT_EQ(table.cos[0], 1.0f);
  EXPECT_EQ(table.sin[0], 0.0f);
}

TEST_P(CpuBackendTest, RopeRotatesInterleavedPairs) {
  const int heads = 3, hd = 8;
  const int64_t tokens = 4;
  RopeTable table = RopeTable::Make(hd, 64, 10000.0f);
  const std::vector<int32_t> positions = {0, 5, 6, 63};
  std::vector<float> x = RandomVector(tokens * heads * hd, &rng_);
  const Tensor y_t = dev_.F32(x, {tokens, heads, hd});
  ASSERT_TRUE(backend_.Rope(y_t, dev_.I32(positions, {tokens}), dev_.Rope(table)).ok());
  const std::vector<float> y = dev_.ReadF32(y_t);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        const float c = table.cos[positions[t] * (hd / 2) + i];
        const float s = table.sin[positions[t] * (hd / 2) + i];
        const int64_t base = (t * heads + h) * hd + 2 * i;
        EXPECT_NEAR(y[base], c * x[base] - s * x[base + 1], 1e-6);
        EXPECT_NEAR(y[base + 1], s * x[base] + c * x[base + 1], 1e-6);
      }
    }
  }
  // Position 0 is the identity.
  for (int i = 0; i < heads * hd; ++i) EXPECT_EQ(y[i], x[i]);
}

TEST_P(CpuBackendTest, RopeScoresDependOnRelativePosition) {
  const int hd = 32;
  RopeTable table = RopeTable::Make(hd, 128, 10000.0f);
  std::vector<float> q0 = RandomVector(hd, &rng_), k0 = RandomVector(hd, &rng_);
  const Tensor rope = dev_.Rope(table);
  auto score = [&](int32_t pq, int32_t pk) {
    const Tensor q_t = dev_.F32(q0, {1, 1, hd}), k_t = dev_.F32(k0, {1, 1, hd});
    EXPECT_TRUE(backend_.Rope(q_t, dev_.I32({pq}, {1}), rope).ok());
    EXPECT_TRUE(backend_.Rope(k_t, dev_.I32({pk}, {1}), rope).ok());
    const std::vector<float> q = dev_.ReadF32(q_t), k = dev_.ReadF32(k_t);
    return std::inner_product(q.begin(), q.end(), k.begin(), 0.0);
  };
  EXPECT_NEAR(score(10, 3), score(50, 43), 1e-4);
  EXPECT_NEAR(score(7, 7), score(100, 100), 1e-4);
}

TEST_P(CpuBackendTest, ElementwiseOps) {
  const int64_t n = 40000;  // above the inline threshold
  std::vector<float> a = RandomVector(n, &rng_, 4.0f), b = RandomVector(n, &rng_);
  const Tensor a_t = dev_.F32(a, {n}), b_t = dev_.F32(b, {n});
  const Tensor y_t = dev_.Filled(DType::kF32, {n});
  ASSERT_TRUE(backend_.SwiGlu(a_t, b_t, y_t).ok());
  const std::vector<float> y = dev_.ReadF32(y_t);
  for (int64_t i = 0; i < n; ++i) {
    const double silu = a[i] / (1.0 + std::exp(-static_cast<double>(a[i])));
    ASSERT_NEAR(y[i], silu * b[i], 1e-5 * (std::fabs(silu * b[i]) + 1e-3));
  }
  ASSERT_TRUE(backend_.Add(a_t, b_t).ok());
  const std::vector<float> acc = dev_.ReadF32(b_t);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(acc[i], b[i] + a[i]);

  const int64_t rows = 3, cols = 5;
  std::vector<float> gate = {0.0f, 2.0f, -30.0f};
  std::vector<float> x = RandomVector(rows * cols, &rng_);
  const Tensor gx_t = dev_.F32(x, {rows, cols});
  ASSERT_TRUE(backend_.SigmoidGateRows(dev_.F32(gate, {rows}), gx_t).ok());
  const std::vector<float> gx = dev_.ReadF32(gx_t);
  for (int64_t r = 0; r < rows; ++r) {
    const double g = 1.0 / (1.0 + std::exp(-static_cast<double>(gate[r])));
    for (int64_t c = 0; c < cols; ++c) ASSERT_NEAR(gx[r * cols + c], g * x[r * cols + c], 1e-6);
  }
}

// Large buffers are fresh page-aligned mmaps: without an offset they would
// all start at one address modulo 4 KiB, and an op reading x while writing y
// would hit the same L1 sets and the 4 KiB load/store aliasing check (the
// demo server ran ~10% slower, docs/perf/device-neutral-engine.md).
TEST(CpuBackendAllocateTest, BuffersAreAlignedAndStartAtDifferentPageOffsets) {
  CpuBackend backend(CpuBackend::Options{1, CpuIsa::kGeneric});
  std::vector<std::unique_ptr<Buffer>> buffers;
  std::vector<uintptr_t> offsets;
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<std::unique_ptr<Buffer>> b = backend.AllocateBuffer(256 << 10);
    ASSERT_TRUE(b.ok()) << b.status();
    const uintptr_t address = reinterpret_cast<uintptr_t>(CpuBackend::HostAddress(**b));
    EXPECT_EQ(address % 64, 0u) << "buffer " << i;
    offsets.push_back(address % 4096);
    buffers.push_back(*std::move(b));
  }
  std::sort(offsets.begin(), offsets.end());
  EXPECT_EQ(std::unique(offsets.begin(), offsets.end()), offsets.end())
      << "two of 8 buffers start at the same offset within a 4 KiB page";
}

TEST(CpuIsaTest, GenericIsAlwaysSupported) {
  EXPECT_TRUE(CpuIsaSupported(CpuIsa::kGeneric));
  EXPECT_EQ(SupportedCpuIsas().front(), CpuIsa::kGeneric);
  CpuBackend auto_backend(CpuBackend::Options{1, CpuIsa::kAuto});
  EXPECT_EQ(auto_backend.isa(), SupportedCpuIsas().back());
}

INSTANTIATE_CPU_BACKEND_TEST_SUITE(CpuBackendTest);

}  // namespace
}  // namespace memserve
