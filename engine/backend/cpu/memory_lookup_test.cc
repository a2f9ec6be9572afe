// CpuBackend::MemoryLookup against a brute force over all n_keys^2 rows.
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

// ---------------------------------------------------------------------------
// Memory lookup against a brute force over all n_keys^2 rows.

struct LookupCase {
  int heads, n_keys, knn, k_dim, v_dim;
  int64_t tokens;
  DType key_dtype, value_dtype;
  bool integer_data;  // small integers: every score exact, many exact ties
};

// The lookup arguments for case `c` (outputs: `out` only).
MemoryLookupArgs LookupArgs(TestTensors* dev, const LookupCase& c,
                            const std::vector<float>& queries, const OwnedTensor& keys,
                            const OwnedTensor& values) {
  MemoryLookupArgs a;
  a.heads = c.heads;
  a.n_keys = c.n_keys;
  a.knn = c.knn;
  a.k_dim = c.k_dim;
  a.v_dim = c.v_dim;
  a.queries = dev->F32(queries, {c.tokens, static_cast<int64_t>(c.heads) * c.k_dim});
  a.keys = dev->Weight(keys);
  a.values = dev->Weight(values);
  a.out = dev->Filled(DType::kF32, {c.tokens, c.v_dim}, -3.0f);
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

void RunLookupCase(Backend* backend, TestTensors* dev, const LookupCase& c, std::mt19937* rng) {
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
  MemoryLookupArgs a = LookupArgs(dev, c, queries, keys, values);
  a.out_indices = dev->Filled(DType::kI64, {c.tokens, c.heads, c.knn});
  a.out_scores = dev->Filled(DType::kF32, {c.tokens, c.heads, c.knn});
  const absl::Status st = backend->MemoryLookup(a);
  ASSERT_TRUE(st.ok()) << st;
  const std::vector<float> out = dev->ReadF32(a.out);
  const std::vector<int64_t> rows = dev->ReadI64(a.out_indices);
  const std::vector<float> scores = dev->ReadF32(a.out_scores);

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
  for (const LookupCase& c : cases) RunLookupCase(&backend_, &dev_, c, &rng_);
}

TEST_P(CpuBackendTest, MemoryLookupWithoutTraceOutputs) {
  const LookupCase c = {2, 16, 4, 8, 8, 2, DType::kF32, DType::kBF16, false};
  std::vector<float> queries = RandomVector(c.tokens * c.heads * c.k_dim, &rng_);
  OwnedTensor keys = MakeTensor({2LL * c.heads * c.n_keys, c.k_dim / 2}, DType::kF32, &rng_);
  OwnedTensor values = MakeTensor({256, c.v_dim}, DType::kBF16, &rng_);
  MemoryLookupArgs a = LookupArgs(&dev_, c, queries, keys, values);
  ASSERT_TRUE(backend_.MemoryLookup(a).ok());
  const std::vector<float> out1 = dev_.ReadF32(a.out);
  a.out_indices = dev_.Filled(DType::kI64, {c.tokens, c.heads, c.knn});
  a.out = dev_.Filled(DType::kF32, {c.tokens, c.v_dim});
  ASSERT_TRUE(backend_.MemoryLookup(a).ok());
  EXPECT_EQ(out1, dev_.ReadF32(a.out));
}

INSTANTIATE_CPU_BACKEND_TEST_SUITE(CpuBackendTest);

}  // namespace
}  // namespace memserve
