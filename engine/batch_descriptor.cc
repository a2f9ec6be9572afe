#include "engine/batch_descriptor.h"

#include <algorithm>
#include <cstring>

namespace memserve {
namespace {

size_t Align8(size_t n) { return (n + 7) / 8 * 8; }

template <typename T>
size_t BytesOf(const std::vector<T>& v) {
  return v.size() * sizeof(T);
}

}  // namespace

void BuildHostBatch(absl::Span<const StepChunk> pass, int block_size, int pad_to_seqs,
                    int table_width, HostBatch* out) {
  HostBatch& b = *out;
  const int real_seqs = static_cast<int>(pass.size());
  const int n_seqs = std::max(real_seqs, pad_to_seqs);
  int max_blocks = std::max(1, table_width);
  for (const StepChunk& p : pass) {
    max_blocks = std::max(max_blocks, (p.end_position() + block_size - 1) / block_size);
  }
  b.kv_rows.clear();
  b.ids.clear();
  b.positions.clear();
  b.seq_starts.clear();
  b.logit_rows.clear();
  b.tables.assign(static_cast<size_t>(n_seqs) * max_blocks, 0);
  for (int q = 0; q < real_seqs; ++q) {
    const StepChunk& p = pass[q];
    const int64_t first = static_cast<int64_t>(b.ids.size());
    b.seq_starts.push_back(static_cast<int32_t>(first));
    for (int t = 0; t < p.num_tokens; ++t) {
      const int pos = p.first_position + t;
      b.positions.push_back(pos);
      b.ids.push_back(p.token_ids[t]);
      b.kv_rows.push_back(static_cast<int64_t>(p.blocks[pos / block_size]) * block_size +
                          pos % block_size);
    }
    const int used = (p.end_position() + block_size - 1) / block_size;
    std::copy(p.blocks.begin(), p.blocks.begin() + used,
              b.tables.begin() + static_cast<int64_t>(q) * max_blocks);
    if (p.all_logits) {
      for (int64_t t = 0; t < p.num_tokens; ++t) b.logit_rows.push_back(first + t);
    } else if (p.wants_logits) {
      b.logit_rows.push_back(first + p.num_tokens - 1);
    }
  }
  for (int q = real_seqs; q < n_seqs; ++q) {
    b.seq_starts.push_back(static_cast<int32_t>(b.ids.size()));
    b.positions.push_back(0);
    b.ids.push_back(0);
    b.kv_rows.push_back(-1);
  }
  b.n_tokens = static_cast<int64_t>(b.ids.size());
  b.n_seqs = n_seqs;
  b.max_blocks = max_blocks;
  b.seq_starts.push_back(static_cast<int32_t>(b.n_tokens));

  b.offset_kv_rows = 0;
  b.offset_ids = Align8(b.offset_kv_rows + BytesOf(b.kv_rows));
  b.offset_positions = Align8(b.offset_ids + BytesOf(b.ids));
  b.offset_seq_starts = Align8(b.offset_positions + BytesOf(b.positions));
  b.offset_tables = Align8(b.offset_seq_starts + BytesOf(b.seq_starts));
  b.bytes.assign(Align8(b.offset_tables + BytesOf(b.tables)), 0);
  std::memcpy(b.bytes.data() + b.offset_kv_rows, b.kv_rows.data(), BytesOf(b.kv_rows));
  std::memcpy(b.bytes.data() + b.offset_ids, b.ids.data(), BytesOf(b.ids));
  std::memcpy(b.bytes.data() + b.offset_positions, b.positions.data(), BytesOf(b.positions));
  std::memcpy(b.bytes.data() + b.offset_seq_starts, b.seq_starts.data(), BytesOf(b.seq_starts));
  std::memcpy(b.bytes.data() + b.offset_tables, b.tables.data(), BytesOf(b.tables));
}

int DecodeGraphBucket(int n_seqs) {
  if (n_seqs < 1) return 0;
  for (int bucket : kDecodeGraphBuckets) {
    if (bucket >= n_seqs) return bucket;
  }
  return 0;
}

bool IsDecodePass(absl::Span<const StepChunk> pass) {
  if (pass.empty()) return false;
  for (const StepChunk& c : pass) {
    if (c.num_tokens != 1 || !(c.wants_logits || c.all_logits)) return false;
  }
  return true;
}

int DecodeGraphTableWidth(int max_seqlen, int block_size) {
  return std::max(1, (max_seqlen + block_size - 1) / block_size);
}

}  // namespace memserve
