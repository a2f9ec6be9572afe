// The host side of a pass's BatchDescriptor (engine/backend/backend.h): the
// arrays the model uploads once per pass, built from the pass's StepChunks,
// and the decode-step graph rules: which passes are replayed as step graphs
// (Backend::CaptureStep) and the batch-size buckets they are padded to.
// Pure logic over chunks (no backend), tested on any machine.
#ifndef MEMSERVE_ENGINE_BATCH_DESCRIPTOR_H_
#define MEMSERVE_ENGINE_BATCH_DESCRIPTOR_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/step_chunk.h"

namespace memserve {

// One pass's descriptor on the host. `bytes` is what one Upload sends:
// kv_rows (I64) first, then ids, positions, seq_starts and the block
// tables (I32), each at its offset_* (multiples of 8); its size is a
// multiple of 8.
struct HostBatch {
  int64_t n_tokens = 0;
  int n_seqs = 0;
  int max_blocks = 0;               // width of the block tables
  std::vector<int64_t> kv_rows;     // [n_tokens]
  std::vector<int32_t> ids;         // [n_tokens]
  std::vector<int32_t> positions;   // [n_tokens]
  std::vector<int32_t> seq_starts;  // [n_seqs + 1]
  std::vector<int32_t> tables;      // [n_seqs, max_blocks]
  std::vector<int64_t> logit_rows;  // token rows whose logits are wanted, in chunk order
  size_t offset_kv_rows = 0, offset_ids = 0, offset_positions = 0, offset_seq_starts = 0,
         offset_tables = 0;
  std::vector<char> bytes;
};

// Fills `out` for the chunks of `pass` (validated by the model: ids, blocks
// and positions in range), blocks of `block_size` tokens. The table width
// is the most blocks any chunk uses, or `table_width` when that is larger.
// With pad_to_seqs > pass.size(), padding sequences follow the real ones
// until there are pad_to_seqs: one token each, id 0, position 0, cache row
// -1 (outside the cache: WriteKv on a device skips it), a table of block 0
// (read, never written) and no logits row.
// REQUIRES: block_size >= 1; every chunk's blocks cover its positions.
void BuildHostBatch(absl::Span<const StepChunk> pass, int block_size, int pad_to_seqs,
                    int table_width, HostBatch* out);

// The batch sizes decode steps are captured at; a decode pass of n
// sequences runs in the smallest bucket >= n.
inline constexpr int kDecodeGraphBuckets[] = {1,  2,  4,   8,   16,  24,  32, 48,
                                              64, 96, 128, 160, 192, 224, 256};

// The bucket of a decode pass of n_seqs sequences, or 0 when n_seqs < 1 or
// beyond the largest bucket (the pass then runs eagerly).
int DecodeGraphBucket(int n_seqs);

// Whether `pass` is a decode pass a step graph can run: every chunk is one
// token whose logits are wanted (so the logits rows are the token rows
// 0..n-1, in order).
bool IsDecodePass(absl::Span<const StepChunk> pass);

// The block-table width of every decode graph over a cache with blocks of
// `block_size` tokens: enough for a sequence of max_seqlen tokens.
int DecodeGraphTableWidth(int max_seqlen, int block_size);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BATCH_DESCRIPTOR_H_
