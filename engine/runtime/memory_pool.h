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
//
// Placement (--memory_placement, engine/runtime/placement_plan.h): host (the
// tables stay in host memory: the CPU's mapping, or the mapping registered
// with a GPU), device (one GPU's copy) or sharded (each shard's columns on
// its own GPU, placed by the backend as a ShardedMemory that gathers and
// combines the slices itself).
// Thread-safety: immutable after Create (Gather of a ShardedMemory from one
// thread at a time, as the backend's ops).
#ifndef MEMSERVE_ENGINE_RUNTIME_MEMORY_POOL_H_
#define MEMSERVE_ENGINE_RUNTIME_MEMORY_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/runtime/tensor.h"

namespace memserve {

enum class MemoryPlacement { kAuto, kDevice, kSharded, kHost };

struct MemoryShard {
  Device device = Device::kCpu;
  int gpu = 0;  // the GPU index of a sharded placement (0 otherwise)
  int64_t col_begin = 0;
  int64_t col_end = 0;
};

// Bytes of the value tables held by one device, for the startup log,
// GetModelInfo and metrics: "cpu" (the CPU's mapping, in place), "host"
// (host memory a GPU reads over PCIe), "cuda:N" (GPU N's memory).
struct DeviceBytes {
  std::string device;
  int64_t bytes = 0;
};

// Value tables placed by shards on several devices (a device backend's
// sharded placement, Backend::PlaceShardedTables): each shard gathers its
// columns on its own device and the slices are combined into the output.
class ShardedMemory {
 public:
  virtual ~ShardedMemory() = default;
  // out[t, c] for every column c of every shard = the ValueGather of table
  // `table` (backend.h) with `rows` and `weights` as MemorySelect wrote
  // them; rows, weights and out are tensors of the model's backend. Errors
  // as the backend's ops.
  virtual absl::Status Gather(int table, const Tensor& rows, const Tensor& weights,
                              const Tensor& out) = 0;
  // Whether Gather may be recorded in a step graph of the model's backend
  // (false when it runs on other devices' streams).
  virtual bool capturable() const = 0;
  // The tables' bytes per device.
  virtual std::vector<DeviceBytes> device_bytes() const = 0;
};

class MemoryPool {
 public:
  static constexpr int kMaxShards = 64;

  struct Table {
    Tensor tensor;               // [rows, v_dim] as placed by the backend
    const void* host = nullptr;  // the checkpoint range it was placed from
    size_t host_bytes = 0;
    int64_t rows = 0;  // [rows, columns] of `elem_bytes` elements; 0 = tensor's
    int64_t columns = 0;
    size_t elem_bytes = 0;
  };

  // The pool of `tables` (all [rows, v_dim], one shared or one per memory
  // layer) split into `shards` column shards on `device`. InvalidArgument
  // naming memory_shards unless 1 <= shards <= kMaxShards; shards beyond
  // what v_dim allows (16 columns each at least) are dropped.
  static absl::StatusOr<MemoryPool> Create(std::vector<Table> tables, int shards, Device device);
  // Tables placed by a backend's ShardedMemory over `shards` (their column
  // ranges and GPUs); `tables` keep their host ranges and shapes (their
  // tensors may be absent: the shards hold the bytes). InvalidArgument
  // when `sharded` is null or the shards do not tile [0, v_dim).
  static absl::StatusOr<MemoryPool> CreateSharded(std::vector<Table> tables,
                                                  std::vector<MemoryShard> shards,
                                                  std::unique_ptr<ShardedMemory> sharded);
  MemoryPool() = default;
  MemoryPool(MemoryPool&&) = default;
  MemoryPool& operator=(MemoryPool&&) = default;

  // Where the tables are (never kAuto) and the bytes per device. Create
  // sets host and {"cpu": bytes()} on the CPU, device and {"cuda:0":
  // bytes()} elsewhere; CreateSharded takes them from the ShardedMemory;
  // set_placement overrides them (e.g. host placement on a GPU).
  MemoryPlacement placement() const { return placement_; }
  const std::vector<DeviceBytes>& device_bytes() const { return device_bytes_; }
  void set_placement(MemoryPlacement placement, std::vector<DeviceBytes> device_bytes);
  // One line saying where the tables went and why (PlacementPlan::Summary);
  // "" when no plan was made.
  const std::string& summary() const { return summary_; }
  void set_summary(std::string summary) { summary_ = std::move(summary); }
  // The sharded placement's gatherer; null when every shard gathers from
  // table(i) on the model's backend (Backend::ValueGather).
  ShardedMemory* sharded() const { return sharded_.get(); }

  int num_tables() const { return static_cast<int>(tables_.size()); }
  // Table i as placed (absent for a sharded placement: see sharded()).
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
  MemoryPlacement placement_ = MemoryPlacement::kHost;
  std::vector<DeviceBytes> device_bytes_;
  std::unique_ptr<ShardedMemory> sharded_;
  std::string summary_;
};

// Column ranges [begin, end) of `shards` contiguous shards over v_dim, each
// begin a multiple of 16, empty ones dropped. REQUIRES: shards >= 1.
std::vector<std::pair<int64_t, int64_t>> ShardColumns(int64_t v_dim, int shards);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_RUNTIME_MEMORY_POOL_H_
