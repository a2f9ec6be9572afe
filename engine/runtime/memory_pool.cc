#include "engine/runtime/memory_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace memserve {

std::vector<std::pair<int64_t, int64_t>> ShardColumns(int64_t v_dim, int shards) {
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t begin = 0;
  for (int s = 0; s < shards && begin < v_dim; ++s) {
    int64_t end = (s + 1 == shards) ? v_dim : (v_dim * (s + 1) / shards + 15) / 16 * 16;
    end = std::min(end, v_dim);
    if (end > begin) out.emplace_back(begin, end);
    begin = std::max(begin, end);
  }
  return out;
}

absl::StatusOr<MemoryPool> MemoryPool::Create(std::vector<Table> tables, int shards,
                                              Device device) {
  if (shards < 1 || shards > kMaxShards) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory_shards is ", shards, "; it must be in [1, ", kMaxShards, "]"));
  }
  MemoryPool pool;
  pool.tables_ = std::move(tables);
  if (pool.tables_.empty()) return pool;
  const int64_t v_dim = pool.tables_[0].tensor.dim(1);
  for (const auto& [begin, end] : ShardColumns(v_dim, shards)) {
    pool.shards_.push_back(MemoryShard{device, begin, end});
  }
  return pool;
}

int64_t MemoryPool::bytes() const {
  int64_t n = 0;
  for (const Table& t : tables_) n += static_cast<int64_t>(t.tensor.nbytes());
  return n;
}

int64_t MemoryPool::shard_bytes(int shard) const {
  const MemoryShard& s = shards_[shard];
  int64_t n = 0;
  for (const Table& t : tables_) {
    n += t.tensor.dim(0) * (s.col_end - s.col_begin) *
         static_cast<int64_t>(DTypeSize(t.tensor.dtype));
  }
  return n;
}

std::vector<std::pair<const void*, size_t>> MemoryPool::host_ranges() const {
  std::vector<std::pair<const void*, size_t>> out;
  for (const Table& t : tables_) out.emplace_back(t.host, t.host_bytes);
  return out;
}

}  // namespace memserve
