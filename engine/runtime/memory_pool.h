// MemoryPool: the memory layers' value tables (the big object: GBs to
// hundreds of GBs) and how they are split for the gather. Built at load from
// the checkpoint mapping: each table is a Tensor placed by the backend (on
// the CPU, the mapping itself, zero-copy) plus the host range it came from,
// which a device backend may pin or register.
//
// Shards split every table by columns (v_dim): shard s owns columns
// [col_begin, col_end) on its device, and ValueGather runs once per shard
// into that slice of the output (on one device the slices are simply
// concatenated in place; across devices an all-gather would combine them).
// On the CPU, R virtual shards run the same code path and give bit-identical
// results for any R (shard starts are multiples of 16 columns).
// Thread-safety: immutable after Create.
#ifndef MEMSERVE_ENGINE_RUNTIME_MEMORY_POOL_H_
#define MEMSERVE_ENGINE_RUNTIME_MEMORY_POOL_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/runtime/tensor.h"

namespace memserve {

struct MemoryShard {
  Device device = Device::kCpu;
  int64_t col_begin = 0;
  int64_t col_end = 0;
};

class MemoryPool {
 public:
  static constexpr int kMaxShards = 64;

  struct Table {
    Tensor tensor;               // [rows, v_dim] as placed by the backend
    const void* host = nullptr;  // the checkpoint range it was placed from
    size_t host_bytes = 0;
  };

  // The pool of `tables` (all [rows, v_dim], one shared or one per memory
  // layer) split into `shards` column shards on `device`. InvalidArgument
  // naming memory_shards unless 1 <= shards <= kMaxShards; shards beyond
  // what v_dim allows (16 columns each at least) are dropped.
  static absl::StatusOr<MemoryPool> Create(std::vector<Table> tables, int shards, Device device);
  MemoryPool() = default;

  int num_tables() const { return static_cast<int>(tables_.size()); }
  const Tensor& table(int i) const { return tables_[i].tensor; }
  absl::Span<const MemoryShard> shards() const { return shards_; }
  // Bytes of all tables, and of one shard's columns of all tables.
  int64_t bytes() const;
  int64_t shard_bytes(int shard) const;
  // The host ranges of the tables (for pinning / registration).
  std::vector<std::pair<const void*, size_t>> host_ranges() const;

 private:
  std::vector<Table> tables_;
  std::vector<MemoryShard> shards_;
};

// Column ranges [begin, end) of `shards` contiguous shards over v_dim, each
// begin a multiple of 16, empty ones dropped. REQUIRES: shards >= 1.
std::vector<std::pair<int64_t, int64_t>> ShardColumns(int64_t v_dim, int shards);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_RUNTIME_MEMORY_POOL_H_
