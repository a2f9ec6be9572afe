#include "engine/runtime/memory_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace memserve {
namespace {

// Fills rows/columns/elem_bytes from the tensor where the caller left them 0.
void CompleteShape(MemoryPool::Table& t) {
  if (t.rows == 0 && t.tensor.buffer != nullptr) {
    t.rows = t.tensor.dim(0);
    t.columns = t.tensor.dim(1);
    t.elem_bytes = DTypeSize(t.tensor.dtype);
  }
}

}  // namespace

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
  for (Table& t : pool.tables_) CompleteShape(t);
  if (pool.tables_.empty()) return pool;
  const int64_t v_dim = pool.tables_[0].columns;
  for (const auto& [begin, end] : ShardColumns(v_dim, shards)) {
    pool.shards_.push_back(MemoryShard{device, 0, begin, end});
  }
  const bool cpu = device == Device::kCpu;
  pool.placement_ = cpu ? MemoryPlacement::kHost : MemoryPlacement::kDevice;
  pool.device_bytes_ = {DeviceBytes{cpu ? "cpu" : "cuda:0", pool.bytes()}};
  return pool;
}

absl::StatusOr<MemoryPool> MemoryPool::CreateSharded(std::vector<Table> tables,
                                                     std::vector<MemoryShard> shards,
                                                     std::unique_ptr<ShardedMemory> sharded) {
  if (sharded == nullptr) {
    return absl::InvalidArgumentError("MemoryPool::CreateSharded: no ShardedMemory");
  }
  if (shards.empty() || static_cast<int>(shards.size()) > kMaxShards) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory_shards is ", shards.size(), "; it must be in [1, ", kMaxShards, "]"));
  }
  MemoryPool pool;
  pool.tables_ = std::move(tables);
  for (Table& t : pool.tables_) CompleteShape(t);
  const int64_t v_dim = pool.tables_.empty() ? 0 : pool.tables_[0].columns;
  int64_t next = 0;
  for (const MemoryShard& s : shards) {
    if (s.col_begin != next || s.col_end <= s.col_begin) {
      return absl::InvalidArgumentError(absl::StrCat("MemoryPool::CreateSharded: shard columns [",
                                                     s.col_begin, ", ", s.col_end,
                                                     ") do not continue from column ", next));
    }
    next = s.col_end;
  }
  if (next != v_dim) {
    return absl::InvalidArgumentError(absl::StrCat("MemoryPool::CreateSharded: the shards cover ",
                                                   next, " of ", v_dim, " columns"));
  }
  pool.shards_ = std::move(shards);
  pool.placement_ = MemoryPlacement::kSharded;
  pool.device_bytes_ = sharded->device_bytes();
  pool.sharded_ = std::move(sharded);
  return pool;
}

void MemoryPool::set_placement(MemoryPlacement placement, std::vector<DeviceBytes> device_bytes) {
  placement_ = placement;
  device_bytes_ = std::move(device_bytes);
}

int64_t MemoryPool::bytes() const {
  int64_t n = 0;
  for (const Table& t : tables_) n += t.rows * t.columns * static_cast<int64_t>(t.elem_bytes);
  return n;
}

int64_t MemoryPool::shard_bytes(int shard) const {
  const MemoryShard& s = shards_[shard];
  int64_t n = 0;
  for (const Table& t : tables_) {
    n += t.rows * (s.col_end - s.col_begin) * static_cast<int64_t>(t.elem_bytes);
  }
  return n;
}

std::vector<std::pair<const void*, size_t>> MemoryPool::host_ranges() const {
  std::vector<std::pair<const void*, size_t>> out;
  for (const Table& t : tables_) out.emplace_back(t.host, t.host_bytes);
  return out;
}

}  // namespace memserve
