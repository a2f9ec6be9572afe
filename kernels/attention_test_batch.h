// Random paged-attention batches for the tests of paged_attention (the GPU
// test and the CPU emulation): prefill chunks and decode tokens mixed, blocks
// scattered over a larger cache, and the CPU backend's Attention on them as
// the reference.
#ifndef MEMSERVE_KERNELS_ATTENTION_TEST_BATCH_H_
#define MEMSERVE_KERNELS_ATTENTION_TEST_BATCH_H_

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/backend_test_util.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"
#include "kernels/element_type.h"

namespace memserve::kernels {

struct AttentionTestSeq {
  int start_pos;  // position of the first query row
  int n_tokens;   // query rows this step
};

struct AttentionTestCase {
  std::vector<AttentionTestSeq> seqs;
  int n_heads = 8;
  int n_kv_heads = 2;
  int head_dim = 64;
  int block_size = 16;
  int sliding_window = 0;
  ElementType cache_type = ElementType::kF32;
  int64_t q_stride = 0;  // 0 = dense
};

// Prefill chunks (from position 0 and continuing), decode tokens, a
// one-token sequence at position 0, sequences crossing block boundaries.
inline std::vector<AttentionTestSeq> MixedAttentionBatch() {
  return {{0, 50}, {100, 1}, {33, 7}, {0, 1}, {250, 1}, {17, 64}, {15, 2}};
}

struct AttentionTestBatch {
  AttentionTestCase c;
  int n_seqs = 0;
  int64_t n_tokens = 0;
  int max_blocks = 0;
  int64_t cache_rows = 0;
  int64_t q_dim = 0, kv_dim = 0, q_stride = 0;
  std::vector<int32_t> seq_starts, positions, block_tables;
  std::vector<float> q_wide;             // [n_tokens, q_stride]
  std::vector<float> q;                  // [n_tokens, q_dim]
  std::vector<float> k_cache, v_cache;   // [cache_rows, kv_dim] fp32 (bf16-exact for BF16 caches)
  std::vector<uint16_t> k_bf16, v_bf16;  // the same caches as bf16
};

// A random batch for `c`: every sequence's blocks are drawn without
// replacement from a cache 3 blocks larger than needed; unused table
// entries hold junk (-7).
inline AttentionTestBatch MakeAttentionTestBatch(const AttentionTestCase& c, std::mt19937* rng) {
  AttentionTestBatch b;
  b.c = c;
  b.n_seqs = static_cast<int>(c.seqs.size());
  b.seq_starts = {0};
  b.max_blocks = 1;
  int total_blocks = 0;
  for (const AttentionTestSeq& s : c.seqs) {
    for (int t = 0; t < s.n_tokens; ++t) b.positions.push_back(s.start_pos + t);
    b.seq_starts.push_back(b.seq_starts.back() + s.n_tokens);
    const int blocks = (s.start_pos + s.n_tokens + c.block_size - 1) / c.block_size;
    b.max_blocks = std::max(b.max_blocks, blocks);
    total_blocks += blocks;
  }
  b.n_tokens = b.seq_starts.back();
  const int cache_blocks = total_blocks + 3;
  std::vector<int32_t> free_blocks(cache_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), *rng);
  b.block_tables.assign(static_cast<size_t>(b.n_seqs) * b.max_blocks, -7);
  for (int s = 0, next = 0; s < b.n_seqs; ++s) {
    const int blocks = (c.seqs[s].start_pos + c.seqs[s].n_tokens + c.block_size - 1) / c.block_size;
    for (int k = 0; k < blocks; ++k) b.block_tables[s * b.max_blocks + k] = free_blocks[next++];
  }
  b.q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  b.kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  b.cache_rows = static_cast<int64_t>(cache_blocks) * c.block_size;
  b.q_stride = c.q_stride == 0 ? b.q_dim : c.q_stride;
  b.q_wide = RandomVector(b.n_tokens * b.q_stride, rng);
  b.q.resize(b.n_tokens * b.q_dim);
  for (int64_t t = 0; t < b.n_tokens; ++t) {
    std::copy_n(b.q_wide.begin() + t * b.q_stride, b.q_dim, b.q.begin() + t * b.q_dim);
  }
  b.k_cache = RandomVector(b.cache_rows * b.kv_dim, rng);
  b.v_cache = RandomVector(b.cache_rows * b.kv_dim, rng);
  b.k_bf16.resize(b.k_cache.size());
  b.v_bf16.resize(b.v_cache.size());
  for (size_t i = 0; i < b.k_cache.size(); ++i) {
    b.k_bf16[i] = F32ToBf16(b.k_cache[i]);
    b.v_bf16[i] = F32ToBf16(b.v_cache[i]);
    if (c.cache_type == ElementType::kBF16) {  // the reference reads what the kernel reads
      b.k_cache[i] = Bf16ToF32(b.k_bf16[i]);
      b.v_cache[i] = Bf16ToF32(b.v_bf16[i]);
    }
  }
  return b;
}

// The CPU backend's Attention on the batch: out [n_tokens, q_dim] (empty,
// with a test failure, if the backend refuses it).
inline std::vector<float> CpuAttentionReference(const AttentionTestBatch& b) {
  CpuBackend cpu(CpuBackend::Options{2, CpuIsa::kAuto});
  TestTensors host(&cpu);
  BatchDescriptor batch;
  batch.n_tokens = b.n_tokens;
  batch.n_seqs = b.n_seqs;
  batch.block_size = b.c.block_size;
  batch.max_blocks = b.max_blocks;
  batch.positions = host.I32(b.positions, {b.n_tokens});
  batch.seq_starts = host.I32(b.seq_starts, {b.n_seqs + 1});
  batch.block_tables = host.I32(b.block_tables, {b.n_seqs, b.max_blocks});
  AttentionShape shape;
  shape.n_heads = b.c.n_heads;
  shape.n_kv_heads = b.c.n_kv_heads;
  shape.head_dim = b.c.head_dim;
  shape.sliding_window = b.c.sliding_window;
  const Tensor out = host.Filled(DType::kF32, {b.n_tokens, b.q_dim});
  const absl::Status status = cpu.Attention(shape, batch, host.F32(b.q, {b.n_tokens, b.q_dim}),
                                            host.F32(b.k_cache, {b.cache_rows, b.kv_dim}),
                                            host.F32(b.v_cache, {b.cache_rows, b.kv_dim}), out);
  if (!status.ok()) {
    ADD_FAILURE() << "CpuBackend::Attention: " << status;
    return {};
  }
  return host.ReadF32(out);
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_ATTENTION_TEST_BATCH_H_
