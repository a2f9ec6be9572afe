#include "engine/backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace memserve {
namespace {

std::vector<float>& ThreadAttentionScratch() {
  thread_local std::vector<float> scratch;
  return scratch;
}

}  // namespace

void CpuAttention(ThreadPool* pool, const CpuKernels& kern,
                  absl::Span<const CpuAttentionSeq> seqs) {
  // Work items are (sequence, token, head) triples numbered consecutively;
  // first_item[s] is the first item of sequence s.
  std::vector<int64_t> first_item(seqs.size() + 1, 0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    first_item[s + 1] = first_item[s] + seqs[s].n_tokens * seqs[s].n_heads;
  }
  pool->ParallelFor(first_item.back(), [&](int64_t begin, int64_t end) {
    std::vector<float>& scores = ThreadAttentionScratch();
    size_t s =
        std::upper_bound(first_item.begin(), first_item.end(), begin) - first_item.begin() - 1;
    for (int64_t item = begin; item < end; ++item) {
      while (item >= first_item[s + 1]) ++s;
      const CpuAttentionSeq& a = seqs[s];
      const int64_t local = item - first_item[s];
      const int64_t t = local / a.n_heads;
      const int h = static_cast<int>(local % a.n_heads);
      const int hd = a.head_dim;
      const int64_t row_floats = static_cast<int64_t>(a.n_kv_heads) * hd;
      const int64_t head_offset = static_cast<int64_t>(h / (a.n_heads / a.n_kv_heads)) * hd;
      const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
      const int64_t pos = a.start_pos + t;
      const int64_t lo =
          a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
      const int64_t n = pos - lo + 1;
      if (scores.size() < static_cast<size_t>(n)) scores.resize(n);
      // Positions [lo, pos] in runs that are contiguous in the cache (one
      // block each when paged): fn(first index into scores, count, offset of
      // the run's first kv head vector in k_cache / v_cache).
      auto for_each_run = [&](auto&& fn) {
        if (a.block_table == nullptr) {
          fn(int64_t{0}, n, lo * row_floats + head_offset);
          return;
        }
        for (int64_t j = lo; j <= pos;) {
          const int64_t offset = j % a.block_size;
          const int64_t count = std::min<int64_t>(a.block_size - offset, pos + 1 - j);
          const int64_t r = static_cast<int64_t>(a.block_table[j / a.block_size]) * a.block_size;
          fn(j - lo, count, (r + offset) * row_floats + head_offset);
          j += count;
        }
      };
      const float* q = a.q + (t * a.n_heads + h) * hd;
      const bool bf16 = a.kv_dtype == DType::kBF16;
      for_each_run([&](int64_t first, int64_t count, int64_t offset) {
        if (bf16) {
          kern.dot_rows_bf16(q, static_cast<const uint16_t*>(a.k_cache) + offset, row_floats, count,
                             hd, scale, scores.data() + first);
        } else {
          kern.dot_rows(q, static_cast<const float*>(a.k_cache) + offset, row_floats, count, hd,
                        scale, scores.data() + first);
        }
      });
      kern.softmax(scores.data(), n);
      float* out = a.out + (t * a.n_heads + h) * hd;
      std::fill(out, out + hd, 0.0f);
      for_each_run([&](int64_t first, int64_t count, int64_t offset) {
        if (bf16) {
          kern.axpy_rows_bf16(scores.data() + first,
                              static_cast<const uint16_t*>(a.v_cache) + offset, row_floats, count,
                              out, hd);
        } else {
          kern.axpy_rows(scores.data() + first, static_cast<const float*>(a.v_cache) + offset,
                         row_floats, count, out, hd);
        }
      });
    }
  });
}

}  // namespace memserve
