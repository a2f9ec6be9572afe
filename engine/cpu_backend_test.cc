// Every CpuBackend op against a plain loop, on random inputs, for every
// instruction-set level this CPU supports and for 1 and several threads.
#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

// A tensor owned by the test, viewed as a TensorView.
struct OwnedTensor {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  TensorView view;
  // fp32 values the backend sees (bf16-rounded for BF16 tensors).
  std::vector<float> values;
};

OwnedTensor MakeTensor(std::vector<int64_t> shape, DType dtype, std::mt19937* rng,
                       float scale = 1.0f) {
  OwnedTensor t;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::normal_distribution<float> dist(0.0f, scale);
  t.values.resize(n);
  for (auto& v : t.values) v = dist(*rng);
  t.view.name = "test";
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  if (dtype == DType::kF32) {
    t.f32 = t.values;
    t.view.data = t.f32.data();
  } else {
    t.bf16.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      t.bf16[i] = F32ToBf16(t.values[i]);
      t.values[i] = Bf16ToF32(t.bf16[i]);
    }
    t.view.data = t.bf16.data();
  }
  return t;
}

OwnedTensor FromValues(std::vector<float> values, std::vector<int64_t> shape, DType dtype) {
  OwnedTensor t;
  t.values = std::move(values);
  t.view.name = "test";
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  if (dtype == DType::kF32) {
    t.f32 = t.values;
    t.view.data = t.f32.data();
  } else {
    t.bf16.resize(t.values.size());
    for (size_t i = 0; i < t.values.size(); ++i) {
      t.bf16[i] = F32ToBf16(t.values[i]);
      t.values[i] = Bf16ToF32(t.bf16[i]);
    }
    t.view.data = t.bf16.data();
  }
  return t;
}

std::vector<float> RandomVector(int64_t n, std::mt19937* rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(*rng);
  return v;
}

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

// Backends for every (ISA, thread count) combination.
class CpuBackendTest : public ::testing::TestWithParam<std::tuple<CpuIsa, int>> {
 protected:
  CpuBackendTest()
      : backend_(CpuBackend::Options{std::get<1>(GetParam()), std::get<0>(GetParam())}) {}
  CpuBackend backend_;
  std::mt19937 rng_{1234};
};

TEST_P(CpuBackendTest, UsesRequestedIsa) { EXPECT_EQ(backend_.isa(), std::get<0>(GetParam())); }

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
  const Case cases[] = {{16, 1, 1},  {17, 13, 3},  {32, 64, 12}, {75, 37, 13},
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

TEST_P(CpuBackendTest, RmsNormMatchesNaiveLoop) {
  for (DType wt : {DType::kF32, DType::kBF16}) {
    const int64_t dim = 37, tokens = 5;
    OwnedTensor w = MakeTensor({dim}, wt, &rng_);
    std::vector<float> x = RandomVector(tokens * dim, &rng_, 3.0f);
    std::vector<float> y(x.size());
    backend_.RmsNorm(x.data(), tokens, w.view, 1e-5f, y.data());
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
    std::vector<float> z = x;
    backend_.RmsNorm(z.data(), tokens, w.view, 1e-5f, z.data());
    EXPECT_EQ(z, y);
  }
}

TEST_P(CpuBackendTest, EmbeddingCopiesRows) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    OwnedTensor table = MakeTensor({10, 6}, dt, &rng_);
    const std::vector<int> ids = {3, 0, 9, 3};
    std::vector<float> y(ids.size() * 6);
    backend_.Embedding(table.view, ids, y.data());
    for (size_t t = 0; t < ids.size(); ++t) {
      for (int i = 0; i < 6; ++i) ASSERT_EQ(y[t * 6 + i], table.values[ids[t] * 6 + i]);
    }
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
  std::vector<float> y = x;
  backend_.Rope(y.data(), tokens, heads, hd, positions.data(), table);
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
  auto score = [&](int32_t pq, int32_t pk) {
    std::vector<float> q = q0, k = k0;
    backend_.Rope(q.data(), 1, 1, hd, &pq, table);
    backend_.Rope(k.data(), 1, 1, hd, &pk, table);
    return std::inner_product(q.begin(), q.end(), k.begin(), 0.0);
  };
  EXPECT_NEAR(score(10, 3), score(50, 43), 1e-4);
  EXPECT_NEAR(score(7, 7), score(100, 100), 1e-4);
}

// Naive attention over a cache [positions, n_kv, hd].
std::vector<double> NaiveAttention(const AttentionArgs& a) {
  const int hd = a.head_dim;
  std::vector<double> out(a.n_tokens * a.n_heads * hd, 0.0);
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const int64_t pos = a.start_pos + t;
    for (int h = 0; h < a.n_heads; ++h) {
      const int kvh = h / (a.n_heads / a.n_kv_heads);
      std::vector<double> s;
      std::vector<int64_t> js;
      for (int64_t j = 0; j <= pos; ++j) {
        if (a.sliding_window > 0 && pos - j >= a.sliding_window) continue;
        double d = 0;
        for (int i = 0; i < hd; ++i) {
          d += static_cast<double>(a.q[(t * a.n_heads + h) * hd + i]) *
               a.k_cache[(j * a.n_kv_heads + kvh) * hd + i];
        }
        s.push_back(d / std::sqrt(static_cast<double>(hd)));
        js.push_back(j);
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double& v : s) sum += (v = std::exp(v - mx));
      for (size_t n = 0; n < s.size(); ++n) {
        for (int i = 0; i < hd; ++i) {
          out[(t * a.n_heads + h) * hd + i] +=
              s[n] / sum * a.v_cache[(js[n] * a.n_kv_heads + kvh) * hd + i];
        }
      }
    }
  }
  return out;
}

TEST_P(CpuBackendTest, AttentionMatchesNaiveLoop) {
  struct Case {
    int n_heads, n_kv, hd;
    int64_t start, tokens;
    int window;
  };
  const Case cases[] = {{4, 4, 16, 0, 1, 0},  {4, 4, 16, 0, 7, 0}, {4, 2, 8, 5, 3, 0},
                        {6, 1, 20, 9, 1, 0},  {4, 2, 16, 3, 9, 4}, {2, 2, 32, 20, 1, 5},
                        {8, 2, 64, 0, 33, 0}, {4, 4, 16, 0, 12, 1}};
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat("heads=", c.n_heads, " kv=", c.n_kv, " hd=", c.hd, " start=", c.start,
                              " T=", c.tokens, " window=", c.window));
    const int64_t total = c.start + c.tokens;
    std::vector<float> q = RandomVector(c.tokens * c.n_heads * c.hd, &rng_);
    std::vector<float> k = RandomVector(total * c.n_kv * c.hd, &rng_);
    std::vector<float> v = RandomVector(total * c.n_kv * c.hd, &rng_);
    std::vector<float> out(c.tokens * c.n_heads * c.hd, -7.0f);
    AttentionArgs a;
    a.n_tokens = c.tokens;
    a.start_pos = c.start;
    a.n_heads = c.n_heads;
    a.n_kv_heads = c.n_kv;
    a.head_dim = c.hd;
    a.sliding_window = c.window;
    a.q = q.data();
    a.k_cache = k.data();
    a.v_cache = v.data();
    a.out = out.data();
    backend_.Attention(a);
    const std::vector<double> ref = NaiveAttention(a);
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << i;
  }
}

// Several sequences in one call, each in its own shuffled blocks of a paged
// cache, give exactly the results of one contiguous-cache call per sequence.
TEST_P(CpuBackendTest, PagedBatchedAttentionEqualsContiguousPerSequence) {
  const int n_heads = 4, n_kv = 2, hd = 16, block_size = 3;
  const int64_t row = n_kv * hd;
  struct Seq {
    int64_t start, tokens;
  };
  const Seq seqs[] = {{0, 5}, {7, 1}, {2, 4}, {11, 1}, {0, 1}};
  int blocks_total = 0;
  for (const Seq& q : seqs) blocks_total += (q.start + q.tokens + block_size - 1) / block_size;
  std::vector<int32_t> block_ids(blocks_total);
  for (int i = 0; i < blocks_total; ++i) block_ids[i] = i;
  std::shuffle(block_ids.begin(), block_ids.end(), rng_);
  std::vector<float> paged_k(blocks_total * block_size * row, NAN);
  std::vector<float> paged_v(paged_k.size(), NAN);

  std::vector<std::vector<float>> qs, ks, vs, expected;
  std::vector<AttentionArgs> batch;
  std::vector<float> out_all;
  int next_block = 0;
  for (const Seq& q : seqs) {
    const int64_t total = q.start + q.tokens;
    qs.push_back(RandomVector(q.tokens * n_heads * hd, &rng_));
    ks.push_back(RandomVector(total * row, &rng_));
    vs.push_back(RandomVector(total * row, &rng_));
    AttentionArgs a;
    a.n_tokens = q.tokens;
    a.start_pos = q.start;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv;
    a.head_dim = hd;
    a.q = qs.back().data();
    a.k_cache = ks.back().data();
    a.v_cache = vs.back().data();
    expected.emplace_back(q.tokens * n_heads * hd);
    a.out = expected.back().data();
    backend_.Attention(a);  // contiguous reference

    const int32_t* table = block_ids.data() + next_block;
    for (int64_t j = 0; j < total; ++j) {
      const int64_t r = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
      std::copy(ks.back().begin() + j * row, ks.back().begin() + (j + 1) * row,
                paged_k.begin() + r * row);
      std::copy(vs.back().begin() + j * row, vs.back().begin() + (j + 1) * row,
                paged_v.begin() + r * row);
    }
    next_block += static_cast<int>((total + block_size - 1) / block_size);
    a.k_cache = paged_k.data();
    a.v_cache = paged_v.data();
    a.block_table = table;
    a.block_size = block_size;
    batch.push_back(a);
  }
  std::vector<std::vector<float>> outs;
  for (size_t i = 0; i < batch.size(); ++i) {
    outs.emplace_back(expected[i].size(), -7.0f);
    batch[i].out = outs[i].data();
  }
  backend_.Attention(absl::MakeConstSpan(batch));
  for (size_t i = 0; i < batch.size(); ++i) {
    for (size_t j = 0; j < expected[i].size(); ++j) {
      ASSERT_EQ(outs[i][j], expected[i][j]) << "sequence " << i << " element " << j;
    }
  }
}

TEST_P(CpuBackendTest, ElementwiseOps) {
  const int64_t n = 40000;  // above the inline threshold
  std::vector<float> a = RandomVector(n, &rng_, 4.0f), b = RandomVector(n, &rng_);
  std::vector<float> y(n);
  backend_.SwiGlu(a.data(), b.data(), n, y.data());
  for (int64_t i = 0; i < n; ++i) {
    const double silu = a[i] / (1.0 + std::exp(-static_cast<double>(a[i])));
    ASSERT_NEAR(y[i], silu * b[i], 1e-5 * (std::fabs(silu * b[i]) + 1e-3));
  }
  std::vector<float> acc = b;
  backend_.Add(a.data(), n, acc.data());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(acc[i], b[i] + a[i]);

  const int64_t rows = 3, cols = 5;
  std::vector<float> gate = {0.0f, 2.0f, -30.0f};
  std::vector<float> x = RandomVector(rows * cols, &rng_);
  std::vector<float> gx = x;
  backend_.SigmoidGateRows(gate.data(), rows, cols, gx.data());
  for (int64_t r = 0; r < rows; ++r) {
    const double g = 1.0 / (1.0 + std::exp(-static_cast<double>(gate[r])));
    for (int64_t c = 0; c < cols; ++c) ASSERT_NEAR(gx[r * cols + c], g * x[r * cols + c], 1e-6);
  }
}

// ---------------------------------------------------------------------------
// Memory lookup against a brute force over all n_keys^2 rows.

struct LookupCase {
  int heads, n_keys, knn, k_dim, v_dim;
  int64_t tokens;
  DType key_dtype, value_dtype;
  bool integer_data;  // small integers: every score exact, many exact ties
};

// The lookup arguments for case `c` (outputs left null).
MemoryLookupArgs LookupArgs(const LookupCase& c, const std::vector<float>& queries,
                            const OwnedTensor& keys, const OwnedTensor& values) {
  MemoryLookupArgs a;
  a.n_tokens = c.tokens;
  a.heads = c.heads;
  a.n_keys = c.n_keys;
  a.knn = c.knn;
  a.k_dim = c.k_dim;
  a.v_dim = c.v_dim;
  a.queries = queries.data();
  a.keys = &keys.view;
  a.values = &values.view;
  return a;
}

struct BruteForce {
  std::vector<int64_t> rows;  // [tokens, heads, knn]
  std::vector<double> scores;
  std::vector<double> out;  // [tokens, v_dim]
  std::vector<double> gap;  // [tokens, heads]: score(knn-1) - score(knn) in the full order
};

BruteForce BruteForceLookup(const LookupCase& c, const std::vector<float>& queries,
                            const std::vector<float>& keys, const std::vector<float>& values) {
  const int half = c.k_dim / 2;
  BruteForce bf;
  bf.out.assign(c.tokens * c.v_dim, 0.0);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int h = 0; h < c.heads; ++h) {
      std::vector<double> s[2];
      for (int p = 0; p < 2; ++p) {
        s[p].resize(c.n_keys);
        for (int j = 0; j < c.n_keys; ++j) {
          double d = 0;
          for (int i = 0; i < half; ++i) {
            d += static_cast<double>(queries[t * c.heads * c.k_dim + h * c.k_dim + p * half + i]) *
                 keys[((static_cast<int64_t>(h) * 2 + p) * c.n_keys + j) * half + i];
          }
          s[p][j] = d;
        }
      }
      std::vector<std::pair<double, int64_t>> all;
      all.reserve(static_cast<size_t>(c.n_keys) * c.n_keys);
      for (int i = 0; i < c.n_keys; ++i) {
        for (int j = 0; j < c.n_keys; ++j) {
          all.emplace_back(s[0][i] + s[1][j], static_cast<int64_t>(i) * c.n_keys + j);
        }
      }
      std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      bf.gap.push_back(
          static_cast<size_t>(c.knn) < all.size() ? all[c.knn - 1].first - all[c.knn].first : 1e30);
      double mx = all[0].first, sum = 0;
      for (int k = 0; k < c.knn; ++k) sum += std::exp(all[k].first - mx);
      for (int k = 0; k < c.knn; ++k) {
        bf.rows.push_back(all[k].second);
        bf.scores.push_back(all[k].first);
        const double w = std::exp(all[k].first - mx) / sum;
        for (int v = 0; v < c.v_dim; ++v) {
          bf.out[t * c.v_dim + v] += w * values[all[k].second * c.v_dim + v];
        }
      }
    }
  }
  return bf;
}

void RunLookupCase(CpuBackend* backend, const LookupCase& c, std::mt19937* rng) {
  SCOPED_TRACE(absl::StrCat("heads=", c.heads, " n_keys=", c.n_keys, " knn=", c.knn,
                            " k_dim=", c.k_dim, " v_dim=", c.v_dim, " T=", c.tokens,
                            " keys=", DTypeName(c.key_dtype), " values=", DTypeName(c.value_dtype),
                            " int=", c.integer_data));
  const int half = c.k_dim / 2;
  std::uniform_int_distribution<int> small(-2, 2);
  auto make = [&](int64_t n) {
    std::vector<float> v = RandomVector(n, rng);
    if (c.integer_data) {
      for (auto& x : v) x = static_cast<float>(small(*rng));
    }
    return v;
  };
  std::vector<float> queries = make(c.tokens * c.heads * c.k_dim);
  OwnedTensor keys = FromValues(make(2LL * c.heads * c.n_keys * half),
                                {2LL * c.heads * c.n_keys, half}, c.key_dtype);
  OwnedTensor values =
      FromValues(RandomVector(static_cast<int64_t>(c.n_keys) * c.n_keys * c.v_dim, rng),
                 {static_cast<int64_t>(c.n_keys) * c.n_keys, c.v_dim}, c.value_dtype);
  std::vector<float> out(c.tokens * c.v_dim, -3.0f);
  std::vector<int64_t> rows(c.tokens * c.heads * c.knn, -1);
  std::vector<float> scores(rows.size());
  MemoryLookupArgs a = LookupArgs(c, queries, keys, values);
  a.out = out.data();
  a.out_indices = rows.data();
  a.out_scores = scores.data();
  backend->MemoryLookup(a);

  const BruteForce bf = BruteForceLookup(c, queries, keys.values, values.values);
  int compared = 0;
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int h = 0; h < c.heads; ++h) {
      const int64_t base = (t * c.heads + h) * c.knn;
      // Random floats: require a clear gap at the cut; integers are exact.
      const bool clear = c.integer_data || bf.gap[t * c.heads + h] > 1e-3;
      for (int k = 0; k < c.knn; ++k) {
        ASSERT_NEAR(scores[base + k], bf.scores[base + k],
                    1e-5 * (1 + std::fabs(bf.scores[base + k])))
            << "t=" << t << " h=" << h << " k=" << k;
        if (!clear) continue;
        // Within the top-knn, compare rows where neighbours are clearly apart.
        const bool sep_prev = k == 0 || bf.scores[base + k - 1] - bf.scores[base + k] > 1e-3;
        const bool sep_next =
            k == c.knn - 1 || bf.scores[base + k] - bf.scores[base + k + 1] > 1e-3;
        if (c.integer_data || (sep_prev && sep_next)) {
          ASSERT_EQ(rows[base + k], bf.rows[base + k]) << "t=" << t << " h=" << h << " k=" << k;
          ++compared;
        }
      }
      if (clear) {
        std::vector<int64_t> got(rows.begin() + base, rows.begin() + base + c.knn);
        std::vector<int64_t> want(bf.rows.begin() + base, bf.rows.begin() + base + c.knn);
        std::sort(got.begin(), got.end());
        std::sort(want.begin(), want.end());
        ASSERT_EQ(got, want) << "t=" << t << " h=" << h;
      }
    }
  }
  EXPECT_GT(compared, 0);
  for (int64_t i = 0; i < c.tokens * c.v_dim; ++i) {
    ASSERT_NEAR(out[i], bf.out[i], 1e-5 * c.heads * (1 + std::fabs(bf.out[i]))) << i;
  }
}

TEST_P(CpuBackendTest, MemoryLookupMatchesBruteForce) {
  const LookupCase cases[] = {
      {1, 16, 4, 8, 8, 1, DType::kF32, DType::kBF16, false},
      {2, 32, 8, 16, 24, 3, DType::kF32, DType::kBF16, false},
      {4, 32, 32, 34, 20, 2, DType::kBF16, DType::kBF16, false},  // knn == n_keys
      {3, 24, 5, 10, 33, 1, DType::kF32, DType::kF32, false},
      {2, 16, 6, 12, 16, 70, DType::kF32, DType::kBF16, false},  // > one token block
      {4, 16, 8, 8, 16, 4, DType::kF32, DType::kBF16, true},     // exact ties
      {2, 20, 16, 6, 8, 3, DType::kBF16, DType::kF32, true},
      {1, 8, 1, 4, 4, 5, DType::kF32, DType::kBF16, true},  // knn == 1
  };
  for (const LookupCase& c : cases) RunLookupCase(&backend_, c, &rng_);
}

TEST_P(CpuBackendTest, MemoryLookupWithoutTraceOutputs) {
  const LookupCase c = {2, 16, 4, 8, 8, 2, DType::kF32, DType::kBF16, false};
  std::vector<float> queries = RandomVector(c.tokens * c.heads * c.k_dim, &rng_);
  OwnedTensor keys = MakeTensor({2LL * c.heads * c.n_keys, c.k_dim / 2}, DType::kF32, &rng_);
  OwnedTensor values = MakeTensor({256, c.v_dim}, DType::kBF16, &rng_);
  MemoryLookupArgs a = LookupArgs(c, queries, keys, values);
  std::vector<float> out1(c.tokens * c.v_dim), out2(out1.size());
  a.out = out1.data();
  backend_.MemoryLookup(a);
  std::vector<int64_t> rows(c.tokens * c.heads * c.knn);
  a.out_indices = rows.data();
  a.out = out2.data();
  backend_.MemoryLookup(a);
  EXPECT_EQ(out1, out2);
}

std::vector<std::tuple<CpuIsa, int>> AllConfigs() {
  std::vector<std::tuple<CpuIsa, int>> out;
  for (CpuIsa isa : SupportedCpuIsas()) {
    for (int threads : {1, 3}) out.emplace_back(isa, threads);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllIsas, CpuBackendTest, ::testing::ValuesIn(AllConfigs()),
                         [](const ::testing::TestParamInfo<std::tuple<CpuIsa, int>>& info) {
                           return absl::StrCat(CpuIsaName(std::get<0>(info.param)), "_",
                                               std::get<1>(info.param), "threads");
                         });

TEST(CpuIsaTest, GenericIsAlwaysSupported) {
  EXPECT_TRUE(CpuIsaSupported(CpuIsa::kGeneric));
  EXPECT_EQ(SupportedCpuIsas().front(), CpuIsa::kGeneric);
  CpuBackend auto_backend(CpuBackend::Options{1, CpuIsa::kAuto});
  EXPECT_EQ(auto_backend.isa(), SupportedCpuIsas().back());
}

}  // namespace
}  // namespace memserve
