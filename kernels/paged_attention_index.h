// The batch indexing of paged_attention (kernels/paged_attention.h) as
// __host__ __device__ functions: which sequence owns a query row, which key
// positions a query attends to, and where a key position lives in the
// paged cache. The kernel runs them on the device; paged_attention_index_test
// runs them on the CPU (and an emulation of the kernel's work split and
// online softmax built on them against the CPU backend's Attention).
// Plain C++ when not compiled by nvcc.
#ifndef MEMSERVE_KERNELS_PAGED_ATTENTION_INDEX_H_
#define MEMSERVE_KERNELS_PAGED_ATTENTION_INDEX_H_

#include <cstdint>

#include "kernels/bf16_bits.h"  // MEMSERVE_HOST_DEVICE

namespace memserve::kernels {

// The sequence owning query row `row`: the last s < n_seqs with
// seq_starts[s] <= row, or -1 when row is outside [seq_starts[0],
// seq_starts[n_seqs]). Empty sequences (equal consecutive starts) own no
// row. REQUIRES: n_seqs >= 1; seq_starts [n_seqs + 1] non-decreasing (if
// not, the answer is some s in [0, n_seqs), never out of range).
MEMSERVE_HOST_DEVICE inline int SequenceOfRow(const int32_t* seq_starts, int n_seqs, int64_t row) {
  if (row < seq_starts[0] || row >= seq_starts[n_seqs]) return -1;
  int lo = 0, hi = n_seqs - 1;
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (seq_starts[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// The key positions [first, last] a query at position `pos` attends to: the
// causal prefix, or the last sliding_window positions when sliding_window >
// 0, clipped to the positions a max_blocks-entry block table can map (so the
// range is bounded whatever the positions say). Empty when last < first.
struct KeyRange {
  int64_t first;
  int64_t last;
};
MEMSERVE_HOST_DEVICE inline KeyRange AttendedKeys(int64_t pos, int sliding_window, int max_blocks,
                                                  int block_size) {
  KeyRange r;
  r.first = 0;
  if (sliding_window > 0 && pos - sliding_window + 1 > 0) r.first = pos - sliding_window + 1;
  const int64_t mapped = static_cast<int64_t>(max_blocks) * block_size;
  r.last = pos < mapped ? pos : mapped - 1;
  return r;
}

// The cache row of key position j (0 <= j < max_blocks * block_size) of the
// sequence whose block table is `table`, or -1 when the table's entry is
// outside [0, cache_blocks) (the position is then masked).
MEMSERVE_HOST_DEVICE inline int64_t CacheRowOfPosition(const int32_t* table, int64_t j,
                                                       int block_size, int64_t cache_blocks) {
  const int64_t block = table[j / block_size];
  if (block < 0 || block >= cache_blocks) return -1;
  return block * block_size + j % block_size;
}

// --- splitting long contexts across blocks (flash-decoding) ---
//
// When a launch has few (row, head) pairs (small decode batches) the keys
// of each pair are cut into `splits` chunks of `chunk` positions, one block
// each: split i covers positions [i * chunk, (i + 1) * chunk), the last split
// everything from (splits - 1) * chunk on (so a position past max_context is
// still attended to). Each block leaves a partial (running max, sum,
// unnormalized output) in the workspace and a second kernel merges them.

// Target blocks for one launch (two per SM of an H100/H200, 132 SMs), the
// fewest keys worth a split, and the most splits.
inline constexpr int64_t kAttentionTargetBlocks = 264;
inline constexpr int64_t kAttentionMinKeysPerSplit = 256;
inline constexpr int kAttentionMaxSplits = 64;

// The number of splits for a launch of n_tokens x n_heads (row, head) pairs
// whose queries sit below position max_context (0 = unknown: no split).
inline int AttentionSplits(int64_t n_tokens, int n_heads, int64_t max_context) {
  const int64_t pairs = n_tokens * n_heads;
  if (max_context <= 0 || pairs <= 0 || pairs >= kAttentionTargetBlocks) return 1;
  int64_t splits = (kAttentionTargetBlocks + pairs - 1) / pairs;
  const int64_t by_work = (max_context + kAttentionMinKeysPerSplit - 1) / kAttentionMinKeysPerSplit;
  if (splits > by_work) splits = by_work;
  if (splits > kAttentionMaxSplits) splits = kAttentionMaxSplits;
  return splits < 1 ? 1 : static_cast<int>(splits);
}

// Positions per split: ceil(max_context / splits). REQUIRES: splits >= 1.
inline int64_t AttentionSplitChunk(int64_t max_context, int splits) {
  return (max_context + splits - 1) / splits;
}

// The part of `keys` that split `split` of `splits` covers (empty when
// last < first).
MEMSERVE_HOST_DEVICE inline KeyRange SplitKeys(const KeyRange& keys, int split, int splits,
                                               int64_t chunk) {
  if (splits <= 1) return keys;
  KeyRange r;
  const int64_t lo = static_cast<int64_t>(split) * chunk;
  r.first = keys.first > lo ? keys.first : lo;
  r.last = keys.last;
  if (split < splits - 1 && lo + chunk - 1 < r.last) r.last = lo + chunk - 1;
  return r;
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_PAGED_ATTENTION_INDEX_H_
