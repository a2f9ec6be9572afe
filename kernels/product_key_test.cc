// The product-key lookup kernels on the GPU (skip without one): select vs
// SelectRowsSequential (topk.h) on random and tie-heavy sub-key scores (rows
// and scores exact, weights to expf), the scores kernel vs an fp64 dot on
// the CPU, the gather vs a CPU loop (dense, column slice with row stride,
// strided bf16 output, unaligned slices, out-of-range rows), and the whole
// lookup vs the CPU backend's MemorySelect + ValueGather.
#include "kernels/product_key.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/memory_lookup.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"
#include "kernels/bf16_bits.h"
#include "kernels/kernel_test_util.h"
#include "kernels/select_test_util.h"
#include "kernels/topk.h"

namespace memserve::kernels {
namespace {

std::vector<float> Normal(size_t n, std::mt19937* rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(*rng);
  return v;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = F32ToBf16Bits(v[i]);
  return b;
}

void ExpectSelectMatches(const std::vector<float>& scores, int64_t n_tokens, int heads, int n_keys,
                         int knn) {
  ExpectSelectMatchesReference<ProductKeySelectParams>(
      [](const ProductKeySelectParams& p) { return LaunchProductKeySelect(p, nullptr); }, scores,
      n_tokens, heads, n_keys, knn);
}

TEST(ProductKeyTest, SelectMatchesTheReference) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(21);
  struct Shape {
    int64_t n_tokens;
    int heads, n_keys, knn;
  };
  for (const Shape& s : {Shape{3, 4, 1024, 32}, Shape{1, 2, 8192, 64}, Shape{70, 4, 256, 16},
                         Shape{2, 3, 64, 64}, Shape{5, 2, 7, 1}, Shape{4, 2, 100, 3}}) {
    ExpectSelectMatches(Normal(s.n_tokens * s.heads * 2 * s.n_keys, &rng), s.n_tokens, s.heads,
                        s.n_keys, s.knn);
  }
  // Ties everywhere (resolved by index, then by row), NaN and -inf lowest.
  std::uniform_int_distribution<int> small(-3, 3), special(0, 29);
  for (int n_keys : {64, 512, 8192}) {
    for (int knn : {8, 32, 64}) {
      std::vector<float> scores(3 * 2 * 2 * n_keys);
      for (float& x : scores) {
        x = static_cast<float>(small(rng));
        const int r = special(rng);
        if (r == 0) x = std::numeric_limits<float>::quiet_NaN();
        if (r == 1) x = -std::numeric_limits<float>::infinity();
        if (r == 2) x = -0.0f;
      }
      ExpectSelectMatches(scores, 3, 2, n_keys, knn);
    }
  }
}

TEST(ProductKeyTest, ScoresMatchAnFp64Dot) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(22);
  for (const bool bf16 : {true, false}) {
    for (const int k_dim : {512, 6, 34}) {  // 16-byte vectors; and the scalar path
      for (const int64_t n_tokens : {1, 5, 40}) {
        const int heads = 3, n_keys = 300;
        const int half = k_dim / 2;
        const int64_t stride = heads * k_dim + 4;
        SCOPED_TRACE(testing::Message()
                     << "bf16 " << bf16 << " k_dim " << k_dim << " tokens " << n_tokens);
        const std::vector<float> q = Normal(n_tokens * stride, &rng);
        std::vector<float> keys = Normal(static_cast<size_t>(heads) * 2 * n_keys * half, &rng);
        const std::vector<uint16_t> keys16 = ToBf16(keys);
        if (bf16) {
          for (size_t i = 0; i < keys.size(); ++i) keys[i] = Bf16BitsToF32(keys16[i]);
        }
        DeviceArray<float> dq(q), dkeys(keys), dout(n_tokens * heads * 2 * n_keys);
        DeviceArray<uint16_t> dkeys16(keys16);
        ProductKeyScoresParams p;
        p.queries = dq.get();
        p.query_stride = stride;
        p.keys = bf16 ? static_cast<const void*>(dkeys16.get()) : dkeys.get();
        p.keys_type = bf16 ? ElementType::kBF16 : ElementType::kF32;
        p.subkey_scores = dout.get();
        p.n_tokens = n_tokens;
        p.heads = heads;
        p.n_keys = n_keys;
        p.k_dim = k_dim;
        ASSERT_TRUE(LaunchProductKeyScores(p, nullptr).ok());
        const std::vector<float> got = dout.Read();
        std::vector<float> want(got.size());
        for (int64_t t = 0; t < n_tokens; ++t) {
          for (int hh = 0; hh < 2 * heads; ++hh) {
            for (int j = 0; j < n_keys; ++j) {
              double dot = 0.0;
              for (int e = 0; e < half; ++e) {
                dot += static_cast<double>(q[t * stride + hh * half + e]) *
                       keys[(static_cast<size_t>(hh) * n_keys + j) * half + e];
              }
              want[(t * 2 * heads + hh) * n_keys + j] = static_cast<float>(dot);
            }
          }
        }
        EXPECT_LT(Nmse(got, want), 1e-12);
      }
    }
  }
}

// out[t, c] = sum_p w[t, p] * values[rows[t, p], col_begin + c], in fp64.
std::vector<float> GatherOnCpu(const std::vector<float>& values, int64_t row_stride,
                               int64_t table_rows, const std::vector<int64_t>& rows,
                               const std::vector<float>& weights, int picks, int64_t n_tokens,
                               int64_t col_begin, int64_t col_end) {
  const int64_t width = col_end - col_begin;
  std::vector<float> out(n_tokens * width);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t c = 0; c < width; ++c) {
      double sum = 0.0;
      for (int p = 0; p < picks; ++p) {
        const int64_t r = rows[t * picks + p];
        if (r < 0 || r >= table_rows) continue;
        sum += static_cast<double>(weights[t * picks + p]) * values[r * row_stride + col_begin + c];
      }
      out[t * width + c] = static_cast<float>(sum);
    }
  }
  return out;
}

TEST(ProductKeyTest, GatherMatchesACpuLoop) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(23);
  struct Case {
    bool bf16_values, bf16_out;
    int64_t n_tokens;
    int picks;
    int64_t row_stride, col_begin, col_end;
  };
  for (const Case& c : {Case{true, false, 1, 128, 1024, 0, 1024},     // dense, 16 warps
                        Case{true, false, 70, 128, 2048, 512, 1536},  // a shard's slice, 4 warps
                        Case{true, true, 3, 64, 2048, 256, 2048},     // bf16 out
                        Case{false, false, 5, 32, 520, 4, 517},       // unaligned: scalar loads
                        Case{true, false, 2, 7, 100, 3, 97},          // odd widths
                        Case{false, true, 65, 128, 264, 0, 264}}) {
    SCOPED_TRACE(testing::Message()
                 << "bf16 " << c.bf16_values << "/" << c.bf16_out << " tokens " << c.n_tokens
                 << " slice [" << c.col_begin << ", " << c.col_end << ") of " << c.row_stride);
    const int64_t table_rows = 500;
    std::vector<float> values = Normal(table_rows * c.row_stride, &rng);
    const std::vector<uint16_t> values16 = ToBf16(values);
    if (c.bf16_values) {
      for (size_t i = 0; i < values.size(); ++i) values[i] = Bf16BitsToF32(values16[i]);
    }
    std::uniform_int_distribution<int64_t> row(-2, table_rows + 1);  // some out of range
    std::vector<int64_t> rows(c.n_tokens * c.picks);
    for (int64_t& r : rows) r = row(rng);
    const std::vector<float> weights = Normal(rows.size(), &rng);
    const int64_t width = c.col_end - c.col_begin;
    const int64_t out_stride = width + 3;
    DeviceArray<float> dvalues(values), dweights(weights), dout(c.n_tokens * out_stride);
    DeviceArray<uint16_t> dvalues16(values16), dout16(c.n_tokens * out_stride);
    DeviceArray<int64_t> drows(rows);
    ProductKeyGatherParams p;
    p.values = c.bf16_values ? static_cast<const void*>(dvalues16.get()) : dvalues.get();
    p.values_type = c.bf16_values ? ElementType::kBF16 : ElementType::kF32;
    p.table_rows = table_rows;
    p.row_stride = c.row_stride;
    p.col_begin = c.col_begin;
    p.col_end = c.col_end;
    p.rows = drows.get();
    p.weights = dweights.get();
    p.picks = c.picks;
    p.n_tokens = c.n_tokens;
    p.out = c.bf16_out ? static_cast<void*>(dout16.get()) : dout.get();
    p.out_type = c.bf16_out ? ElementType::kBF16 : ElementType::kF32;
    p.out_stride = out_stride;
    ASSERT_TRUE(LaunchProductKeyGather(p, nullptr).ok());
    const std::vector<float> want = GatherOnCpu(values, c.row_stride, table_rows, rows, weights,
                                                c.picks, c.n_tokens, c.col_begin, c.col_end);
    std::vector<float> got(want.size());
    const std::vector<float> out = dout.Read();
    const std::vector<uint16_t> out16 = dout16.Read();
    for (int64_t t = 0; t < c.n_tokens; ++t) {
      for (int64_t col = 0; col < width; ++col) {
        got[t * width + col] =
            c.bf16_out ? Bf16BitsToF32(out16[t * out_stride + col]) : out[t * out_stride + col];
      }
    }
    EXPECT_LT(Nmse(got, want), c.bf16_out ? 1e-5 : 1e-12);
  }
}

// A column's value does not depend on the slice it is gathered in (both
// block shapes): two slices written into one output equal the whole, bit for
// bit, as the sharded pool needs.
TEST(ProductKeyTest, GatherIsSliceInvariant) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(25);
  const int64_t table_rows = 300, v_dim = 520, split = 264;
  const int picks = 128;
  const std::vector<uint16_t> values = ToBf16(Normal(table_rows * v_dim, &rng));
  for (const int64_t n_tokens : {2, 80}) {
    std::vector<int64_t> rows(n_tokens * picks);
    for (int64_t& r : rows) r = static_cast<int64_t>(rng() % table_rows);
    const std::vector<float> weights = Normal(rows.size(), &rng);
    DeviceArray<uint16_t> dvalues(values);
    DeviceArray<int64_t> drows(rows);
    DeviceArray<float> dweights(weights), whole(n_tokens * v_dim), parts(n_tokens * v_dim);
    ProductKeyGatherParams p;
    p.values = dvalues.get();
    p.table_rows = table_rows;
    p.row_stride = v_dim;
    p.rows = drows.get();
    p.weights = dweights.get();
    p.picks = picks;
    p.n_tokens = n_tokens;
    p.out_stride = v_dim;
    p.col_end = v_dim;
    p.out = whole.get();
    ASSERT_TRUE(LaunchProductKeyGather(p, nullptr).ok());
    p.col_end = split;
    p.out = parts.get();
    ASSERT_TRUE(LaunchProductKeyGather(p, nullptr).ok());
    p.col_begin = split;
    p.col_end = v_dim;
    p.out = parts.get() + split;
    ASSERT_TRUE(LaunchProductKeyGather(p, nullptr).ok());
    EXPECT_EQ(parts.Read(), whole.Read()) << n_tokens << " tokens";
  }
}

// The whole lookup vs the CPU backend (fp32 keys, bf16 values): rows equal
// wherever the CPU's score gap to the next rank is clear, out within fp32
// rounding when every row agrees.
TEST(ProductKeyTest, LookupMatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(24);
  ThreadPool pool(2);
  const int heads = 4, n_keys = 64, knn = 32, k_dim = 64, v_dim = 256;
  for (const int64_t n_tokens : {1, 9, 80}) {
    const std::vector<float> q = Normal(n_tokens * heads * k_dim, &rng);
    const std::vector<float> keys =
        Normal(static_cast<size_t>(heads) * 2 * n_keys * k_dim / 2, &rng);
    std::vector<float> values = Normal(static_cast<size_t>(n_keys) * n_keys * v_dim, &rng);
    const std::vector<uint16_t> values16 = ToBf16(values);
    for (size_t i = 0; i < values.size(); ++i) values[i] = Bf16BitsToF32(values16[i]);
    const size_t picks = static_cast<size_t>(n_tokens) * heads * knn;
    std::vector<int64_t> cpu_rows(picks);
    std::vector<float> cpu_w(picks), cpu_s(picks), cpu_out(n_tokens * v_dim);
    CpuMemorySelectArgs a;
    a.n_tokens = n_tokens;
    a.heads = heads;
    a.n_keys = n_keys;
    a.knn = knn;
    a.k_dim = k_dim;
    a.queries = q.data();
    a.keys = keys.data();
    a.rows = cpu_rows.data();
    a.weights = cpu_w.data();
    a.scores = cpu_s.data();
    CpuMemorySelect select;
    select.Run(&pool, GenericKernels(), a);
    CpuValueGatherArgs g;
    g.n_tokens = n_tokens;
    g.picks = heads * knn;
    g.v_dim = v_dim;
    g.values = values16.data();
    g.values_dtype = DType::kBF16;
    g.rows = cpu_rows.data();
    g.weights = cpu_w.data();
    g.col_begin = 0;
    g.col_end = v_dim;
    g.out = cpu_out.data();
    CpuValueGather(&pool, GenericKernels(), g);

    DeviceArray<float> dq(q), dkeys(keys), dout(n_tokens * v_dim), dw(picks), ds(picks);
    DeviceArray<uint16_t> dvalues(values16);
    DeviceArray<int64_t> drows(picks);
    ProductKeyLookupParams p;
    p.queries = dq.get();
    p.keys = dkeys.get();
    p.keys_type = ElementType::kF32;
    p.values = dvalues.get();
    p.values_type = ElementType::kBF16;
    p.table_rows = static_cast<int64_t>(n_keys) * n_keys;
    p.col_end = v_dim;
    p.out = dout.get();
    p.rows = drows.get();
    p.weights = dw.get();
    p.scores = ds.get();
    p.n_tokens = n_tokens;
    p.heads = heads;
    p.n_keys = n_keys;
    p.knn = knn;
    p.k_dim = k_dim;
    DeviceArray<char> ws(ProductKeyLookupWorkspaceBytes(p));
    p.workspace = ws.get();
    p.workspace_bytes = ws.size();
    ASSERT_TRUE(LaunchProductKeyLookup(p, nullptr).ok());
    const std::vector<int64_t> rows = drows.Read();
    const std::vector<float> out = dout.Read(), w = dw.Read();
    int64_t clear = 0, clear_mismatches = 0;
    bool all_same = true;
    for (size_t i = 0; i < picks; ++i) {
      all_same &= rows[i] == cpu_rows[i];
      const size_t k = i % knn;
      const float prev = k > 0 ? cpu_s[i - 1] : INFINITY;
      // The last rank's gap to the unselected next one is unknown: never clear.
      const float next = k + 1 < static_cast<size_t>(knn) ? cpu_s[i + 1] : cpu_s[i];
      if (prev - cpu_s[i] > 1e-4f && cpu_s[i] - next > 1e-4f) {
        ++clear;
        clear_mismatches += rows[i] != cpu_rows[i];
      }
    }
    EXPECT_GT(clear, static_cast<int64_t>(picks) / 2);
    EXPECT_EQ(clear_mismatches, 0);
    if (all_same) {
      EXPECT_LT(Nmse(out, cpu_out), 1e-10);
    }
  }
}

}  // namespace
}  // namespace memserve::kernels
