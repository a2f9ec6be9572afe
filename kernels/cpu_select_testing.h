// What the select kernels' host-side tests compare against: the CPU backend's
// MemorySelect, run with k_dim = 2 so that every sub-key score is one exact
// product q * key (no summation order to differ), walked (token, head) by
// (token, head) with the sub-key scores a GEMM would give that item.
#ifndef MEMSERVE_KERNELS_CPU_SELECT_TESTING_H_
#define MEMSERVE_KERNELS_CPU_SELECT_TESTING_H_

#include <cstdint>
#include <vector>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/memory_lookup.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"

namespace memserve::kernels {

// One (token, head)'s chosen rows, their scores and softmax weights.
struct Selection {
  std::vector<int64_t> rows;
  std::vector<float> scores, weights;
};

// Runs CpuMemorySelect (portable kernels) on keys [heads, 2, n_keys] and
// queries [n_tokens, heads, 2], then calls fn(t, h, head_scores, cpu) for
// every (token t, head h): head_scores is that item's [2, n_keys] sub-key
// scores, cpu what the backend chose.
template <typename Fn>
void ForEachCpuSelection(ThreadPool* pool, const std::vector<float>& keys,
                         const std::vector<float>& queries, int n_tokens, int heads, int n_keys,
                         int knn, Fn fn) {
  constexpr int kKDim = 2;
  CpuMemorySelectArgs args;
  args.n_tokens = n_tokens;
  args.heads = heads;
  args.n_keys = n_keys;
  args.knn = knn;
  args.k_dim = kKDim;
  args.queries = queries.data();
  args.keys = keys.data();
  args.keys_dtype = DType::kF32;
  std::vector<int64_t> rows(static_cast<size_t>(n_tokens) * heads * knn);
  std::vector<float> weights(rows.size()), scores(rows.size());
  args.rows = rows.data();
  args.weights = weights.data();
  args.scores = scores.data();
  CpuMemorySelect cpu;
  cpu.Run(pool, GenericKernels(), args);
  std::vector<float> head_scores(2 * static_cast<size_t>(n_keys));
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int half = 0; half < 2; ++half) {
        const float q = queries[(t * heads + h) * kKDim + half];
        for (int j = 0; j < n_keys; ++j) {
          head_scores[half * n_keys + j] = keys[(h * 2 + half) * n_keys + j] * q;
        }
      }
      const size_t off = (static_cast<size_t>(t) * heads + h) * knn;
      const Selection chosen{
          std::vector<int64_t>(rows.begin() + off, rows.begin() + off + knn),
          std::vector<float>(scores.begin() + off, scores.begin() + off + knn),
          std::vector<float>(weights.begin() + off, weights.begin() + off + knn)};
      fn(t, h, head_scores, chosen);
    }
  }
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_CPU_SELECT_TESTING_H_
