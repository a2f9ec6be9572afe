// CpuBackend::Attention against a naive loop; paged equals contiguous.
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

// One sequence for the naive reference: q [tokens, n_heads, hd] at
// positions start.., a contiguous cache [start + tokens, n_kv, hd].
struct NaiveSeq {
  int64_t start = 0, tokens = 0;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
};

std::vector<double> NaiveAttention(const AttentionShape& shape, const NaiveSeq& a) {
  const int hd = shape.head_dim;
  std::vector<double> out(a.tokens * shape.n_heads * hd, 0.0);
  for (int64_t t = 0; t < a.tokens; ++t) {
    const int64_t pos = a.start + t;
    for (int h = 0; h < shape.n_heads; ++h) {
      const int kvh = h / (shape.n_heads / shape.n_kv_heads);
      std::vector<double> s;
      std::vector<int64_t> js;
      for (int64_t j = 0; j <= pos; ++j) {
        if (shape.sliding_window > 0 && pos - j >= shape.sliding_window) continue;
        double d = 0;
        for (int i = 0; i < hd; ++i) {
          d += static_cast<double>(a.q[(t * shape.n_heads + h) * hd + i]) *
               a.k[(j * shape.n_kv_heads + kvh) * hd + i];
        }
        s.push_back(d / std::sqrt(static_cast<double>(hd)));
        js.push_back(j);
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double& v : s) sum += (v = std::exp(v - mx));
      for (size_t n = 0; n < s.size(); ++n) {
        for (int i = 0; i < hd; ++i) {
          out[(t * shape.n_heads + h) * hd + i] +=
              s[n] / sum * a.v[(js[n] * shape.n_kv_heads + kvh) * hd + i];
        }
      }
    }
  }
  return out;
}

// Attention of sequences (start, tokens, block table) over a paged cache
// k/v [rows, n_kv * hd] with q the sequences' queries concatenated; returns
// the output rows, concatenated.
struct PagedSeq {
  int64_t start = 0, tokens = 0;
  std::vector<int32_t> table;
};
std::vector<float> RunAttention(Backend* backend, TestTensors* dev, const AttentionShape& shape,
                                const std::vector<PagedSeq>& seqs, int block_size,
                                const std::vector<float>& q, const std::vector<float>& k,
                                const std::vector<float>& v) {
  const int64_t row = static_cast<int64_t>(shape.n_kv_heads) * shape.head_dim;
  const int64_t q_dim = static_cast<int64_t>(shape.n_heads) * shape.head_dim;
  BatchDescriptor batch;
  batch.n_seqs = static_cast<int>(seqs.size());
  batch.block_size = block_size;
  for (const PagedSeq& s : seqs) {
    batch.max_blocks = std::max(batch.max_blocks, static_cast<int>(s.table.size()));
  }
  std::vector<int32_t> starts, positions, tables(seqs.size() * batch.max_blocks, 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    starts.push_back(static_cast<int32_t>(positions.size()));
    for (int64_t t = 0; t < seqs[i].tokens; ++t) {
      positions.push_back(static_cast<int32_t>(seqs[i].start + t));
    }
    std::copy(seqs[i].table.begin(), seqs[i].table.end(), tables.begin() + i * batch.max_blocks);
  }
  batch.n_tokens = static_cast<int64_t>(positions.size());
  starts.push_back(static_cast<int32_t>(batch.n_tokens));
  batch.seq_starts = dev->I32(starts, {batch.n_seqs + 1});
  batch.positions = dev->I32(positions, {batch.n_tokens});
  batch.block_tables = dev->I32(tables, {batch.n_seqs, batch.max_blocks});
  const int64_t rows = static_cast<int64_t>(k.size()) / row;
  const Tensor out = dev->Filled(DType::kF32, {batch.n_tokens, q_dim}, -7.0f);
  const absl::Status st =
      backend->Attention(shape, batch, dev->F32(q, {batch.n_tokens, q_dim}),
                         dev->F32(k, {rows, row}), dev->F32(v, {rows, row}), out);
  EXPECT_TRUE(st.ok()) << st;
  return dev->ReadF32(out);
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
    AttentionShape shape;
    shape.n_heads = c.n_heads;
    shape.n_kv_heads = c.n_kv;
    shape.head_dim = c.hd;
    shape.sliding_window = c.window;
    // The whole cache as one block.
    const std::vector<float> out = RunAttention(&backend_, &dev_, shape, {{c.start, c.tokens, {0}}},
                                                static_cast<int>(total), q, k, v);
    const std::vector<double> ref =
        NaiveAttention(shape, NaiveSeq{c.start, c.tokens, q.data(), k.data(), v.data()});
    ASSERT_EQ(out.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << i;
  }
}

// Several sequences in one call, each in its own shuffled blocks of a paged
// cache, give exactly the results of one call per sequence over a cache of
// one block.
TEST_P(CpuBackendTest, PagedBatchedAttentionEqualsContiguousPerSequence) {
  const int n_heads = 4, n_kv = 2, hd = 16, block_size = 3;
  const int64_t row = n_kv * hd;
  AttentionShape shape;
  shape.n_heads = n_heads;
  shape.n_kv_heads = n_kv;
  shape.head_dim = hd;
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

  std::vector<float> q_all, expected;
  std::vector<PagedSeq> batch;
  int next_block = 0;
  for (const Seq& q : seqs) {
    const int64_t total = q.start + q.tokens;
    const std::vector<float> qs = RandomVector(q.tokens * n_heads * hd, &rng_);
    const std::vector<float> ks = RandomVector(total * row, &rng_);
    const std::vector<float> vs = RandomVector(total * row, &rng_);
    const std::vector<float> alone = RunAttention(
        &backend_, &dev_, shape, {{q.start, q.tokens, {0}}}, static_cast<int>(total), qs, ks, vs);
    expected.insert(expected.end(), alone.begin(), alone.end());
    q_all.insert(q_all.end(), qs.begin(), qs.end());

    PagedSeq p{q.start, q.tokens, {}};
    const int used = static_cast<int>((total + block_size - 1) / block_size);
    p.table.assign(block_ids.begin() + next_block, block_ids.begin() + next_block + used);
    for (int64_t j = 0; j < total; ++j) {
      const int64_t r = static_cast<int64_t>(p.table[j / block_size]) * block_size + j % block_size;
      std::copy(ks.begin() + j * row, ks.begin() + (j + 1) * row, paged_k.begin() + r * row);
      std::copy(vs.begin() + j * row, vs.begin() + (j + 1) * row, paged_v.begin() + r * row);
    }
    next_block += used;
    batch.push_back(std::move(p));
  }
  const std::vector<float> out =
      RunAttention(&backend_, &dev_, shape, batch, block_size, q_all, paged_k, paged_v);
  ASSERT_EQ(out.size(), expected.size());
  for (size_t j = 0; j < expected.size(); ++j) {
    ASSERT_EQ(out[j], expected[j]) << "element " << j;
  }
}

// A block id outside the cache is an error naming the sequence, not a read
// out of bounds.
TEST_P(CpuBackendTest, AttentionRejectsBlocksOutsideTheCache) {
  AttentionShape shape;
  shape.n_heads = 2;
  shape.n_kv_heads = 2;
  shape.head_dim = 4;
  BatchDescriptor batch;
  batch.n_tokens = 1;
  batch.n_seqs = 1;
  batch.block_size = 2;
  batch.max_blocks = 1;
  batch.seq_starts = dev_.I32({0, 1}, {2});
  batch.positions = dev_.I32({0}, {1});
  batch.block_tables = dev_.I32({5}, {1, 1});  // the cache has 2 blocks
  const Tensor cache = dev_.Filled(DType::kF32, {4, 8});
  const Tensor q = dev_.Filled(DType::kF32, {1, 8});
  const absl::Status st = backend_.Attention(shape, batch, q, cache, cache, q);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("sequence 0"), std::string::npos) << st;
}

INSTANTIATE_CPU_BACKEND_TEST_SUITE(CpuBackendTest);

}  // namespace
}  // namespace memserve
