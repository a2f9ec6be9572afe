// Every Backend op on every backend of AllBackendFactories() against a naive
// double-precision reference on random inputs, compared by normalized mean
// squared error (NMSE = sum (got - want)^2 / sum want^2), in the manner of
// ggml's test-backend-ops. A new backend (CUDA) runs these by adding its
// factory; a factory that cannot make its backend here (no device) skips.
//
// Thresholds per weight dtype: the reference uses the same (bf16-rounded)
// inputs, so the error is the backend's arithmetic alone: fp32 accumulation
// in another order is ~1e-12; kMaxNmseF32 leaves room for TF32-like device
// math, kMaxNmseBf16 for a backend that also rounds activations to bf16.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/backend/backend_test_util.h"
#include "engine/backend/testing/backend_factories.h"
#include "engine/dtype.h"
#include "engine/status_macros.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

constexpr double kMaxNmseF32 = 1e-7;
constexpr double kMaxNmseBf16 = 1e-5;

double MaxNmse(DType weights) { return weights == DType::kBF16 ? kMaxNmseBf16 : kMaxNmseF32; }

double Nmse(const std::vector<float>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return INFINITY;
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = got[i] - want[i];
    err += d * d;
    norm += want[i] * want[i];
  }
  return norm > 0 ? err / norm : err;
}

class BackendOpsTest : public ::testing::TestWithParam<BackendFactory> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> b = GetParam().make();
    if (!b.ok()) GTEST_SKIP() << GetParam().name << ": " << b.status();
    backend_ = *std::move(b);
    dev_ = std::make_unique<TestTensors>(backend_.get());
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<TestTensors> dev_;
  std::mt19937 rng_{20240607};
};

TEST_P(BackendOpsTest, MatMul) {
  struct Case {
    int64_t out, in, tokens;
  };
  for (const Case& c : {Case{48, 64, 1}, Case{130, 257, 5}, Case{33, 100, 17}, Case{1, 64, 3}}) {
    for (DType wt : {DType::kF32, DType::kBF16}) {
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE(absl::StrCat(c.out, "x", c.in, " T=", c.tokens, " ", DTypeName(wt),
                                  with_bias ? " bias" : ""));
        const OwnedTensor w = MakeTensor({c.out, c.in}, wt, &rng_);
        const OwnedTensor bias = MakeTensor({c.out}, DType::kF32, &rng_);
        const std::vector<float> x = RandomVector(c.tokens * c.in, &rng_);
        const Tensor y = dev_->Filled(DType::kF32, {c.tokens, c.out});
        ASSERT_TRUE(backend_
                        ->MatMul(dev_->F32(x, {c.tokens, c.in}),
                                 dev_->Weight(w, WeightUse::kMatMul),
                                 with_bias ? dev_->Weight(bias) : Tensor(), y)
                        .ok());
        std::vector<double> want(c.tokens * c.out);
        for (int64_t t = 0; t < c.tokens; ++t) {
          for (int64_t o = 0; o < c.out; ++o) {
            double s = with_bias ? bias.values[o] : 0.0;
            for (int64_t i = 0; i < c.in; ++i) {
              s += static_cast<double>(w.values[o * c.in + i]) * x[t * c.in + i];
            }
            want[t * c.out + o] = s;
          }
        }
        EXPECT_LE(Nmse(dev_->ReadF32(y), want), MaxNmse(wt));
      }
    }
  }
}

TEST_P(BackendOpsTest, RmsNorm) {
  for (DType wt : {DType::kF32, DType::kBF16}) {
    const int64_t dim = 96, tokens = 7;
    const OwnedTensor w = MakeTensor({dim}, wt, &rng_);
    const std::vector<float> x = RandomVector(tokens * dim, &rng_, 2.0f);
    const Tensor y = dev_->Filled(DType::kF32, {tokens, dim});
    ASSERT_TRUE(backend_->RmsNorm(dev_->F32(x, {tokens, dim}), dev_->Weight(w), 1e-5f, y).ok());
    std::vector<double> want(x.size());
    for (int64_t t = 0; t < tokens; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[t * dim + i]) * x[t * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int64_t i = 0; i < dim; ++i) want[t * dim + i] = x[t * dim + i] * inv * w.values[i];
    }
    EXPECT_LE(Nmse(dev_->ReadF32(y), want), MaxNmse(wt)) << DTypeName(wt);
  }
}

TEST_P(BackendOpsTest, EmbeddingIsExact) {
  for (DType wt : {DType::kF32, DType::kBF16}) {
    const OwnedTensor table = MakeTensor({50, 24}, wt, &rng_);
    const std::vector<int32_t> ids = {7, 0, 49, 7, 13};
    const Tensor y = dev_->Filled(DType::kF32, {5, 24});
    ASSERT_TRUE(backend_->Embedding(dev_->Weight(table), dev_->I32(ids, {5}), y).ok());
    const std::vector<float> got = dev_->ReadF32(y);
    for (size_t t = 0; t < ids.size(); ++t) {
      for (int i = 0; i < 24; ++i) ASSERT_EQ(got[t * 24 + i], table.values[ids[t] * 24 + i]);
    }
  }
}

TEST_P(BackendOpsTest, Rope) {
  const int64_t tokens = 5;
  const int heads = 3, hd = 16;
  const RopeTable table = RopeTable::Make(hd, 64, 10000.0f);
  const std::vector<int32_t> positions = {0, 9, 33, 63, 1};
  const std::vector<float> x = RandomVector(tokens * heads * hd, &rng_);
  const Tensor y = dev_->F32(x, {tokens, heads, hd});
  ASSERT_TRUE(backend_->Rope(y, dev_->I32(positions, {tokens}), dev_->Rope(table)).ok());
  std::vector<double> want(x.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        const double c = table.cos[positions[t] * (hd / 2) + i];
        const double s = table.sin[positions[t] * (hd / 2) + i];
        const int64_t k = (t * heads + h) * hd + 2 * i;
        want[k] = c * x[k] - s * x[k + 1];
        want[k + 1] = s * x[k] + c * x[k + 1];
      }
    }
  }
  EXPECT_LE(Nmse(dev_->ReadF32(y), want), kMaxNmseF32);
}

TEST_P(BackendOpsTest, WriteKvIsExact) {
  const int64_t rows = 12, kv_dim = 8;
  const std::vector<float> k = RandomVector(3 * kv_dim, &rng_);
  const std::vector<float> v = RandomVector(3 * kv_dim, &rng_);
  const std::vector<int64_t> slots = {5, 0, 11};
  const Tensor k_cache = dev_->Filled(DType::kF32, {rows, kv_dim}, -1.0f);
  const Tensor v_cache = dev_->Filled(DType::kF32, {rows, kv_dim}, -1.0f);
  ASSERT_TRUE(backend_
                  ->WriteKv(dev_->F32(k, {3, kv_dim}), dev_->F32(v, {3, kv_dim}),
                            dev_->I64(slots, {3}), k_cache, v_cache)
                  .ok());
  const std::vector<float> kc = dev_->ReadF32(k_cache), vc = dev_->ReadF32(v_cache);
  for (int64_t r = 0; r < rows; ++r) {
    const auto it = std::find(slots.begin(), slots.end(), r);
    for (int64_t i = 0; i < kv_dim; ++i) {
      const float want_k = it == slots.end() ? -1.0f : k[(it - slots.begin()) * kv_dim + i];
      const float want_v = it == slots.end() ? -1.0f : v[(it - slots.begin()) * kv_dim + i];
      ASSERT_EQ(kc[r * kv_dim + i], want_k) << "row " << r;
      ASSERT_EQ(vc[r * kv_dim + i], want_v) << "row " << r;
    }
  }
}

TEST_P(BackendOpsTest, PagedAttention) {
  for (int window : {0, 5}) {
    AttentionShape shape;
    shape.n_heads = 4;
    shape.n_kv_heads = 2;
    shape.head_dim = 16;
    shape.sliding_window = window;
    const int block_size = 4;
    const int64_t row = shape.n_kv_heads * shape.head_dim;
    const int64_t q_dim = shape.n_heads * shape.head_dim;
    // Three sequences (first position, new tokens), each in shuffled blocks.
    struct Seq {
      int start, tokens;
    };
    const std::vector<Seq> seqs = {{0, 6}, {9, 1}, {3, 4}};
    const int max_blocks = 3, cache_blocks = 9;
    std::vector<int32_t> ids(cache_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng_);
    const std::vector<float> k = RandomVector(cache_blocks * block_size * row, &rng_);
    const std::vector<float> v = RandomVector(k.size(), &rng_);
    std::vector<int32_t> starts, positions, tables;
    for (size_t s = 0; s < seqs.size(); ++s) {
      starts.push_back(static_cast<int32_t>(positions.size()));
      for (int t = 0; t < seqs[s].tokens; ++t) positions.push_back(seqs[s].start + t);
      for (int b = 0; b < max_blocks; ++b) tables.push_back(ids[s * max_blocks + b]);
    }
    const int64_t n = static_cast<int64_t>(positions.size());
    starts.push_back(static_cast<int32_t>(n));
    BatchDescriptor batch;
    batch.n_tokens = n;
    batch.n_seqs = static_cast<int>(seqs.size());
    batch.block_size = block_size;
    batch.max_blocks = max_blocks;
    batch.seq_starts = dev_->I32(starts, {batch.n_seqs + 1});
    batch.positions = dev_->I32(positions, {n});
    batch.block_tables = dev_->I32(tables, {batch.n_seqs, max_blocks});
    const std::vector<float> q = RandomVector(n * q_dim, &rng_);
    const Tensor out = dev_->Filled(DType::kF32, {n, q_dim});
    const int64_t cache_rows = cache_blocks * block_size;
    ASSERT_TRUE(backend_
                    ->Attention(shape, batch, dev_->F32(q, {n, q_dim}),
                                dev_->F32(k, {cache_rows, row}), dev_->F32(v, {cache_rows, row}),
                                out)
                    .ok());
    std::vector<double> want(n * q_dim, 0.0);
    const int group = shape.n_heads / shape.n_kv_heads;
    for (size_t s = 0; s < seqs.size(); ++s) {
      for (int t = 0; t < seqs[s].tokens; ++t) {
        const int64_t tok = starts[s] + t;
        const int pos = seqs[s].start + t;
        for (int h = 0; h < shape.n_heads; ++h) {
          std::vector<double> score;
          std::vector<int64_t> cache_row;
          for (int j = 0; j <= pos; ++j) {
            if (window > 0 && pos - j >= window) continue;
            const int64_t r =
                static_cast<int64_t>(tables[s * max_blocks + j / block_size]) * block_size +
                j % block_size;
            double d = 0;
            for (int i = 0; i < shape.head_dim; ++i) {
              d += static_cast<double>(q[tok * q_dim + h * shape.head_dim + i]) *
                   k[r * row + (h / group) * shape.head_dim + i];
            }
            score.push_back(d / std::sqrt(static_cast<double>(shape.head_dim)));
            cache_row.push_back(r);
          }
          const double mx = *std::max_element(score.begin(), score.end());
          double sum = 0;
          for (double& x : score) sum += (x = std::exp(x - mx));
          for (size_t j = 0; j < score.size(); ++j) {
            for (int i = 0; i < shape.head_dim; ++i) {
              want[tok * q_dim + h * shape.head_dim + i] +=
                  score[j] / sum * v[cache_row[j] * row + (h / group) * shape.head_dim + i];
            }
          }
        }
      }
    }
    EXPECT_LE(Nmse(dev_->ReadF32(out), want), kMaxNmseF32) << "window " << window;
  }
}

// A BF16 K/V cache (--kv_cache_dtype bf16): WriteKv rounds K and V to bf16
// (nearest even), Attention reads them back, on every backend.
TEST_P(BackendOpsTest, Bf16KvCache) {
  const int block_size = 4, cache_blocks = 3;
  const int64_t rows = cache_blocks * block_size;
  AttentionShape shape;
  shape.n_heads = 2;
  shape.n_kv_heads = 1;
  shape.head_dim = 8;
  const int64_t kv_dim = shape.n_kv_heads * shape.head_dim;
  const int64_t q_dim = shape.n_heads * shape.head_dim;
  // One sequence of 6 tokens in blocks {2, 0}, written all at once.
  const int64_t n = 6;
  const std::vector<float> k = RandomVector(n * kv_dim, &rng_);
  const std::vector<float> v = RandomVector(n * kv_dim, &rng_);
  const std::vector<int32_t> table = {2, 0};
  std::vector<int64_t> slots(n);
  std::vector<int32_t> positions(n);
  for (int64_t t = 0; t < n; ++t) {
    positions[t] = static_cast<int32_t>(t);
    slots[t] = static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size;
  }
  const Tensor k_cache = dev_->Filled(DType::kBF16, {rows, kv_dim});
  const Tensor v_cache = dev_->Filled(DType::kBF16, {rows, kv_dim});
  const absl::Status written =
      backend_->WriteKv(dev_->F32(k, {n, kv_dim}), dev_->F32(v, {n, kv_dim}), dev_->I64(slots, {n}),
                        k_cache, v_cache);
  ASSERT_TRUE(written.ok()) << written;
  BatchDescriptor batch;
  batch.n_tokens = n;
  batch.n_seqs = 1;
  batch.block_size = block_size;
  batch.max_blocks = 2;
  batch.seq_starts = dev_->I32({0, static_cast<int32_t>(n)}, {2});
  batch.positions = dev_->I32(positions, {n});
  batch.block_tables = dev_->I32(table, {1, 2});
  const std::vector<float> q = RandomVector(n * q_dim, &rng_);
  const Tensor out = dev_->Filled(DType::kF32, {n, q_dim});
  ASSERT_TRUE(
      backend_->Attention(shape, batch, dev_->F32(q, {n, q_dim}), k_cache, v_cache, out).ok());
  auto bf16 = [](float x) { return double{Bf16ToF32(F32ToBf16(x))}; };
  std::vector<double> want(n * q_dim, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int h = 0; h < shape.n_heads; ++h) {
      std::vector<double> score(t + 1);
      for (int64_t j = 0; j <= t; ++j) {
        double d = 0;
        for (int i = 0; i < shape.head_dim; ++i) {
          d += double{q[t * q_dim + h * shape.head_dim + i]} * bf16(k[j * kv_dim + i]);
        }
        score[j] = d / std::sqrt(static_cast<double>(shape.head_dim));
      }
      const double mx = *std::max_element(score.begin(), score.end());
      double sum = 0;
      for (double& x : score) sum += (x = std::exp(x - mx));
      for (int64_t j = 0; j <= t; ++j) {
        for (int i = 0; i < shape.head_dim; ++i) {
          want[t * q_dim + h * shape.head_dim + i] += score[j] / sum * bf16(v[j * kv_dim + i]);
        }
      }
    }
  }
  EXPECT_LE(Nmse(dev_->ReadF32(out), want), kMaxNmseF32);
}

TEST_P(BackendOpsTest, Elementwise) {
  const int64_t n = 3000;
  const std::vector<float> a = RandomVector(n, &rng_, 3.0f), b = RandomVector(n, &rng_);
  const Tensor at = dev_->F32(a, {n}), bt = dev_->F32(b, {n});
  const Tensor y = dev_->Filled(DType::kF32, {n});
  ASSERT_TRUE(backend_->SwiGlu(at, bt, y).ok());
  std::vector<double> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = a[i] / (1.0 + std::exp(-double{a[i]})) * b[i];
  EXPECT_LE(Nmse(dev_->ReadF32(y), want), kMaxNmseF32) << "SwiGlu";

  ASSERT_TRUE(backend_->Add(at, bt).ok());
  for (int64_t i = 0; i < n; ++i) want[i] = double{a[i]} + b[i];
  EXPECT_LE(Nmse(dev_->ReadF32(bt), want), kMaxNmseF32) << "Add";

  const int64_t rows = 6, cols = 50;
  const std::vector<float> gate = RandomVector(rows, &rng_, 2.0f);
  const std::vector<float> x = RandomVector(rows * cols, &rng_);
  const Tensor xt = dev_->F32(x, {rows, cols});
  ASSERT_TRUE(backend_->SigmoidGateRows(dev_->F32(gate, {rows, 1}), xt).ok());
  std::vector<double> gated(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      gated[r * cols + c] = x[r * cols + c] / (1.0 + std::exp(-double{gate[r]}));
    }
  }
  EXPECT_LE(Nmse(dev_->ReadF32(xt), gated), kMaxNmseF32) << "SigmoidGateRows";
}

TEST_P(BackendOpsTest, MemoryLookup) {
  for (DType vt : {DType::kF32, DType::kBF16}) {
    const int heads = 2, n_keys = 16, knn = 4, k_dim = 8, v_dim = 24;
    const int64_t tokens = 3, half = k_dim / 2;
    const std::vector<float> queries = RandomVector(tokens * heads * k_dim, &rng_);
    const OwnedTensor keys = MakeTensor({2LL * heads * n_keys, half}, DType::kF32, &rng_);
    const OwnedTensor values = MakeTensor({n_keys * n_keys, v_dim}, vt, &rng_);
    MemoryLookupArgs a;
    a.heads = heads;
    a.n_keys = n_keys;
    a.knn = knn;
    a.k_dim = k_dim;
    a.v_dim = v_dim;
    a.queries = dev_->F32(queries, {tokens, heads * k_dim});
    a.keys = dev_->Weight(keys);
    a.values = dev_->Weight(values);
    a.out = dev_->Filled(DType::kF32, {tokens, v_dim});
    a.out_indices = dev_->Filled(DType::kI64, {tokens, heads, knn});
    ASSERT_TRUE(backend_->MemoryLookup(a).ok());
    // Brute force over all n_keys^2 rows: top-knn by (score desc, row asc),
    // softmax, weighted sum of value rows over heads.
    std::vector<double> want(tokens * v_dim, 0.0);
    std::vector<int64_t> want_rows;
    for (int64_t t = 0; t < tokens; ++t) {
      for (int h = 0; h < heads; ++h) {
        std::vector<double> s1(n_keys), s2(n_keys);
        for (int j = 0; j < n_keys; ++j) {
          for (int64_t i = 0; i < half; ++i) {
            const double q1 = queries[(t * heads + h) * k_dim + i];
            const double q2 = queries[(t * heads + h) * k_dim + half + i];
            s1[j] += q1 * keys.values[((2 * h) * n_keys + j) * half + i];
            s2[j] += q2 * keys.values[((2 * h + 1) * n_keys + j) * half + i];
          }
        }
        std::vector<std::pair<double, int64_t>> all;
        for (int i = 0; i < n_keys; ++i) {
          for (int j = 0; j < n_keys; ++j) all.push_back({-(s1[i] + s2[j]), i * n_keys + j});
        }
        std::sort(all.begin(), all.end());
        double sum = 0;
        for (int k = 0; k < knn; ++k) sum += std::exp(-all[k].first + all[0].first);
        for (int k = 0; k < knn; ++k) {
          const double w = std::exp(-all[k].first + all[0].first) / sum;
          want_rows.push_back(all[k].second);
          for (int c = 0; c < v_dim; ++c) {
            want[t * v_dim + c] += w * values.values[all[k].second * v_dim + c];
          }
        }
      }
    }
    EXPECT_EQ(dev_->ReadI64(a.out_indices), want_rows) << DTypeName(vt);
    EXPECT_LE(Nmse(dev_->ReadF32(a.out), want), MaxNmse(vt)) << DTypeName(vt);
  }
}

// ValueGather over column shards: each call writes only its columns, and
// the shards together equal one call over all columns, bit for bit.
TEST_P(BackendOpsTest, ValueGatherShardsConcatenate) {
  const int64_t tokens = 3, picks = 5, rows = 40, v_dim = 72;
  for (DType vt : {DType::kF32, DType::kBF16}) {
    const OwnedTensor values = MakeTensor({rows, v_dim}, vt, &rng_);
    std::vector<int64_t> ids(tokens * picks);
    for (auto& r : ids) r = static_cast<int64_t>(rng_() % rows);
    const std::vector<float> w = RandomVector(tokens * picks, &rng_);
    const Tensor table = dev_->Weight(values);
    const Tensor rows_t = dev_->I64(ids, {tokens, picks});
    const Tensor w_t = dev_->F32(w, {tokens, picks});
    const Tensor whole = dev_->Filled(DType::kF32, {tokens, v_dim}, -5.0f);
    ASSERT_TRUE(backend_->ValueGather(table, rows_t, w_t, 0, v_dim, whole).ok());
    const Tensor sharded = dev_->Filled(DType::kF32, {tokens, v_dim}, -5.0f);
    ASSERT_TRUE(backend_->ValueGather(table, rows_t, w_t, 16, 48, sharded).ok());
    const std::vector<float> got = dev_->ReadF32(sharded);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = 0; c < v_dim; ++c) {
        if (c < 16 || c >= 48) {
          ASSERT_EQ(got[t * v_dim + c], -5.0f) << "column " << c;
        }
      }
    }
    ASSERT_TRUE(backend_->ValueGather(table, rows_t, w_t, 0, 16, sharded).ok());
    ASSERT_TRUE(backend_->ValueGather(table, rows_t, w_t, 48, v_dim, sharded).ok());
    EXPECT_EQ(dev_->ReadF32(sharded), dev_->ReadF32(whole)) << DTypeName(vt);
    std::vector<double> want(tokens * v_dim, 0.0);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t i = 0; i < picks; ++i) {
        for (int64_t c = 0; c < v_dim; ++c) {
          want[t * v_dim + c] +=
              double{w[t * picks + i]} * values.values[ids[t * picks + i] * v_dim + c];
        }
      }
    }
    EXPECT_LE(Nmse(dev_->ReadF32(whole), want), MaxNmse(vt)) << DTypeName(vt);
  }
}

// Step graphs: a captured op reruns on the bytes its operands hold at
// replay; a capture runs nothing. Backends without graphs say so.
TEST_P(BackendOpsTest, StepGraphReplaysOnNewBytes) {
  const int64_t n = 1000;
  const std::vector<float> a = RandomVector(n, &rng_), b = RandomVector(n, &rng_);
  const Tensor x = dev_->F32(a, {n});
  const Tensor y = dev_->Filled(DType::kF32, {n}, 1.0f);
  const OwnedTensor w_host = MakeTensor({4, n}, DType::kBF16, &rng_);
  const Tensor w = dev_->Weight(w_host, WeightUse::kMatMul);
  if (!backend_->SupportsStepGraphs()) {
    EXPECT_EQ(backend_->CaptureStep([] { return absl::OkStatus(); }).status().code(),
              absl::StatusCode::kUnimplemented);
    return;
  }
  const Tensor z = dev_->Filled(DType::kF32, {1, 4});
  // Eagerly first (sizes the backend's scratch), then captured.
  const auto ops = [&]() -> absl::Status {
    RETURN_IF_ERROR(backend_->Add(x, y));
    return backend_->MatMul(y.Reshaped({1, n}), w, Tensor(), z);
  };
  ASSERT_TRUE(ops().ok());
  const std::vector<float> z_eager = dev_->ReadF32(z);
  ASSERT_TRUE(backend_->Upload(std::vector<float>(n, 1.0f).data(), y).ok());
  absl::StatusOr<std::unique_ptr<Backend::StepGraph>> graph = backend_->CaptureStep(ops);
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_EQ(dev_->ReadF32(y), std::vector<float>(n, 1.0f)) << "a capture ran its ops";
  ASSERT_TRUE(backend_->ReplayStep(**graph).ok());
  EXPECT_EQ(dev_->ReadF32(z), z_eager) << "the replay differs from the eager run";
  // New bytes in x: the replay reads them.
  ASSERT_TRUE(backend_->Upload(b.data(), x).ok());
  ASSERT_TRUE(backend_->Upload(std::vector<float>(n, 1.0f).data(), y).ok());
  ASSERT_TRUE(backend_->ReplayStep(**graph).ok());
  const std::vector<float> got = dev_->ReadF32(y);
  std::vector<double> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = 1.0 + b[i];
  EXPECT_LE(Nmse(got, want), kMaxNmseF32);
  // Upload during a capture is refused, and ends the capture with the error.
  EXPECT_FALSE(backend_->CaptureStep([&] { return backend_->Upload(b.data(), x); }).ok());
}

// Bad operands are errors, never reads out of bounds: a tensor of another
// backend, a view past its buffer, a wrong shape.
TEST_P(BackendOpsTest, BadOperandsAreInvalidArgument) {
  auto other = GetParam().make();
  ASSERT_TRUE(other.ok());
  TestTensors other_dev(other->get());
  const Tensor x = dev_->Filled(DType::kF32, {2, 4});
  const Tensor foreign = other_dev.Filled(DType::kF32, {2, 4});
  EXPECT_EQ(backend_->Add(foreign, x).code(), absl::StatusCode::kInvalidArgument);
  Tensor past_end = x;
  past_end.offset = x.buffer->size();
  EXPECT_EQ(backend_->Add(past_end, x).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->Add(dev_->Filled(DType::kF32, {3}), x).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->Add(dev_->Filled(DType::kI32, {2, 4}), x).code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, BackendOpsTest, ::testing::ValuesIn(AllBackendFactories()),
                         [](const ::testing::TestParamInfo<BackendFactory>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace memserve
