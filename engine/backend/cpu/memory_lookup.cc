#include "engine/backend/cpu/memory_lookup.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/backend/cpu/matmul.h"

namespace memserve {
namespace {

template <typename T>
void GrowTo(std::vector<T>* v, size_t n) {
  if (v->size() < n) v->resize(n);
}

// The k best of s[0..n) sorted by (score desc, index asc), written to
// (out_s, out_i). NaN scores count as -inf. REQUIRES: 1 <= k <= n.
void TopKSubKeys(const float* s, int n, int k, float* out_s, int32_t* out_i) {
  int size = 0;
  for (int j = 0; j < n; ++j) {
    float v = s[j];
    if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
    if (size == k) {
      // Later indices lose ties, so only a strictly larger score enters.
      if (!(v > out_s[k - 1])) continue;
      --size;
    }
    int p = size;
    while (p > 0 && v > out_s[p - 1]) {
      out_s[p] = out_s[p - 1];
      out_i[p] = out_i[p - 1];
      --p;
    }
    out_s[p] = v;
    out_i[p] = j;
    ++size;
  }
}

inline bool RowBefore(float sa, int64_t ra, float sb, int64_t rb) {
  return sa > sb || (sa == sb && ra < rb);
}

// Thread-local scratch: no allocation once a thread has seen the largest size.
struct LookupScratch {
  std::vector<float> s1, s2, best_s;
  std::vector<int32_t> i1, i2;
  std::vector<int64_t> best_r;
};
LookupScratch& ThreadLookupScratch() {
  thread_local LookupScratch scratch;
  return scratch;
}

}  // namespace

void CpuMemorySelect::Run(ThreadPool* pool, const CpuKernels& kern, const CpuMemorySelectArgs& a) {
  const int heads = a.heads;
  const int n_keys = a.n_keys;
  const int knn = a.knn;
  const int64_t half = a.k_dim / 2;
  const int64_t key_rows = 2LL * heads * n_keys;
  const int64_t q_stride = static_cast<int64_t>(heads) * a.k_dim;
  // Tokens per block bound the sub-key score scratch (block x key_rows floats).
  constexpr int64_t kTokenBlock = 64;

  for (int64_t t0 = 0; t0 < a.n_tokens; t0 += kTokenBlock) {
    const int64_t nb = std::min(kTokenBlock, a.n_tokens - t0);
    GrowTo(&subkey_scores_, static_cast<size_t>(nb * key_rows));
    float* scores = subkey_scores_.data();

    // 1. Sub-key scores: keys row r = (h, half_idx, j) belongs to group
    //    g = 2h + half_idx = r / n_keys and reads query columns
    //    [g * k_dim/2, (g+1) * k_dim/2).  scores [nb, key_rows].
    GroupedMatMul(pool, kern, a.keys, a.keys_dtype, key_rows, half,
                  /*rows_per_group=*/n_keys,
                  /*x_group_stride=*/half, nullptr, DType::kF32, a.queries + t0 * q_stride,
                  q_stride, nb, scores, key_rows);

    // 2. Per (token, head): top-knn per half, candidate pairs, top-knn rows,
    //    softmax.
    pool->ParallelFor(nb * heads, [&](int64_t begin, int64_t end) {
      LookupScratch& s = ThreadLookupScratch();
      GrowTo(&s.s1, knn);
      GrowTo(&s.s2, knn);
      GrowTo(&s.i1, knn);
      GrowTo(&s.i2, knn);
      GrowTo(&s.best_s, knn);
      GrowTo(&s.best_r, knn);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t t = item / heads;
        const int h = static_cast<int>(item % heads);
        const float* head_scores = scores + t * key_rows + 2LL * h * n_keys;
        TopKSubKeys(head_scores, n_keys, knn, s.s1.data(), s.i1.data());
        TopKSubKeys(head_scores + n_keys, n_keys, knn, s.s2.data(), s.i2.data());
        // Both lists are sorted, so pair (ia, ib) is beaten by every
        // (ia', ib') with ia' <= ia, ib' <= ib: only (ia+1)*(ib+1) <= knn
        // can be among the best knn.
        int size = 0;
        for (int ia = 0; ia < knn; ++ia) {
          const int nb_max = knn / (ia + 1);
          for (int ib = 0; ib < nb_max; ++ib) {
            const float v = s.s1[ia] + s.s2[ib];
            const int64_t row = static_cast<int64_t>(s.i1[ia]) * n_keys + s.i2[ib];
            if (size == knn) {
              if (!RowBefore(v, row, s.best_s[knn - 1], s.best_r[knn - 1])) continue;
              --size;
            }
            int p = size;
            while (p > 0 && RowBefore(v, row, s.best_s[p - 1], s.best_r[p - 1])) {
              s.best_s[p] = s.best_s[p - 1];
              s.best_r[p] = s.best_r[p - 1];
              --p;
            }
            s.best_s[p] = v;
            s.best_r[p] = row;
            ++size;
          }
        }
        // Softmax over the knn scores (sorted, so the first is the max).
        const int64_t out_off = ((t0 + t) * heads + h) * static_cast<int64_t>(knn);
        float* w = a.weights + out_off;
        int64_t* rows = a.rows + out_off;
        float sum = 0.0f;
        for (int k = 0; k < knn; ++k) {
          w[k] = std::exp(s.best_s[k] - s.best_s[0]);
          sum += w[k];
        }
        for (int k = 0; k < knn; ++k) {
          w[k] /= sum;
          rows[k] = s.best_r[k];
        }
        if (a.scores != nullptr) {
          std::copy(s.best_s.begin(), s.best_s.begin() + knn, a.scores + out_off);
        }
      }
    });
  }
}

void CpuValueGather(ThreadPool* pool, const CpuKernels& kern, const CpuValueGatherArgs& a) {
  const int64_t width = a.col_end - a.col_begin;
  if (a.n_tokens <= 0 || width <= 0) return;
  const int64_t v_dim = a.v_dim;
  const int64_t picks = a.picks;
  const int threads = pool->num_threads();
  // Weighted sum of value rows, fp32 accumulation. Tasks are (token, column
  // block); small batches split columns so that all threads take part.
  // Blocks are multiples of 16 columns from col_begin: every element gets
  // the same fmadd sequence whatever the blocking (and the sharding).
  const int64_t col_blocks = std::max<int64_t>(
      1, std::min<int64_t>(width / 64, (2LL * threads + a.n_tokens - 1) / a.n_tokens));
  const int64_t col_block = ((width + col_blocks - 1) / col_blocks + 15) / 16 * 16;
  const int64_t n_col_blocks = (width + col_block - 1) / col_block;
  const bool bf16_values = a.values_dtype == DType::kBF16;
  pool->ParallelFor(a.n_tokens * n_col_blocks, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / n_col_blocks;
      const int64_t c0 = a.col_begin + (task % n_col_blocks) * col_block;
      const int64_t cn = std::min(a.col_end, c0 + col_block) - c0;
      float* out = a.out + t * v_dim + c0;
      std::fill(out, out + cn, 0.0f);
      const float* w = a.weights + t * picks;
      const int64_t* rows = a.rows + t * picks;
      for (int64_t i = 0; i < picks; ++i) {
        if (bf16_values) {
          kern.axpy_bf16(w[i], static_cast<const uint16_t*>(a.values) + rows[i] * v_dim + c0, out,
                         cn);
        } else {
          kern.axpy_f32(w[i], static_cast<const float*>(a.values) + rows[i] * v_dim + c0, out, cn);
        }
      }
    }
  });
}

}  // namespace memserve
