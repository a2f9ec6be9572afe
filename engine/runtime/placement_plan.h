// Where the memory pool goes on a node's GPUs: the planner behind
// `--memory_placement auto|device|sharded|host` and `--memory_gpus`
// (docs/architecture.md, "The memory pool"). Pure logic over sizes, run at
// load before anything is allocated, so every case (1..8 GPUs of any size,
// tables of GBs to hundreds of GBs) is tested without a GPU.
//
// The plan keeps the dense model and the KV cache on the first GPU and
// places the value tables (all memory layers' tables together):
//   device   on the first GPU with everything else;
//   sharded  split by columns (v_dim) over R GPUs: each GPU holds every row
//            and its column slice (a multiple of 16 columns), as the
//            training code shards the table; the first GPU also holds the
//            dense model and the KV cache;
//   host     in host memory (the checkpoint mapping, registered with the
//            driver or copied to pinned memory); the GPU gathers the rows it
//            needs over PCIe;
//   auto     device if it fits, else sharded over the allowed GPUs, else
//            host; when nothing fits, an error that says why each failed.
// Every GPU keeps `reserve_bytes` free (CUDA context, activations, cuBLAS
// workspace).
#ifndef MEMSERVE_ENGINE_RUNTIME_PLACEMENT_PLAN_H_
#define MEMSERVE_ENGINE_RUNTIME_PLACEMENT_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/runtime/memory_pool.h"  // MemoryPlacement, ShardColumns

namespace memserve {

// "auto", "device", "sharded", "host"; InvalidArgument naming
// --memory_placement and the accepted values otherwise.
absl::StatusOr<MemoryPlacement> ParseMemoryPlacement(absl::string_view text);
const char* MemoryPlacementName(MemoryPlacement placement);

// The most GPUs --memory_gpus takes.
inline constexpr int kMaxMemoryGpus = 64;
// --memory_gpus: "all" (0: every visible GPU) or N in [1, kMaxMemoryGpus];
// InvalidArgument naming --memory_gpus and the accepted values otherwise.
absl::StatusOr<int> ParseMemoryGpus(absl::string_view text);

struct PlacementRequest {
  MemoryPlacement placement = MemoryPlacement::kAuto;
  // Use at most this many GPUs (the first ones); 0 = all of `gpu_free_bytes`.
  int max_gpus = 0;
  // Free memory of each visible GPU, in device order. Empty = no GPU.
  std::vector<int64_t> gpu_free_bytes;
  // Host memory that may be pinned (physical RAM left for the table).
  int64_t host_bytes = 0;
  // The value tables: total bytes and their common width (columns, v_dim).
  // REQUIRES: table_bytes is a multiple of table_columns.
  int64_t table_bytes = 0;
  int64_t table_columns = 0;
  int64_t dense_bytes = 0;            // every other weight (first GPU)
  int64_t kv_bytes = 0;               // the KV cache budget (first GPU)
  int64_t reserve_bytes = 1LL << 30;  // kept free on every GPU used
};

struct PlacedShard {
  int gpu = 0;  // index into PlacementRequest::gpu_free_bytes
  int64_t col_begin = 0;
  int64_t col_end = 0;
  int64_t bytes = 0;  // of the tables' columns [col_begin, col_end)
};

struct PlacementPlan {
  MemoryPlacement placement = MemoryPlacement::kDevice;  // never kAuto
  // The column shards of the tables (one for device, R for sharded, none
  // for host), contiguous from column 0 to table_columns.
  std::vector<PlacedShard> shards;
  // Bytes the plan puts on each GPU it uses (dense + KV + shard + reserve on
  // the first one); gpu_bytes.size() = the number of GPUs used.
  std::vector<int64_t> gpu_bytes;
  int64_t host_table_bytes = 0;  // the table's bytes left in host memory

  // One line for the startup log and GetModelInfo (without GPUs, e.g. on
  // the CPU, just "host: the 1.0 GiB table stays in host memory"), e.g.
  // "sharded over 4 GPUs: 64.0 GiB of table each; GPU 0 70.1 GiB, GPU 1 65.0 GiB, ...".
  std::string Summary() const;
};

// The plan for `request`. InvalidArgument naming the field for inconsistent
// sizes; FailedPrecondition when no GPU is visible; ResourceExhausted when
// the requested placement (or, for auto, every placement) does not fit,
// saying per placement what is needed where and what is free.
absl::StatusOr<PlacementPlan> PlanPlacement(const PlacementRequest& request);

// The column shards a plan's tables are gathered in when `memory_shards`
// shards are asked for (--memory_shards): device and host plans split the
// table into max(1, memory_shards) column shards on GPU 0 (ShardColumns);
// a sharded plan over G GPUs into n = max(memory_shards, G) shards, shard i
// on the GPU of plan.shards[i * G / n] (so several shards may share a GPU:
// R shards on one GPU exercise the sharded path without R GPUs). Each
// result's bytes are those of its columns. REQUIRES: memory_shards >= 1,
// table_columns > 0, table_bytes a multiple of table_columns.
std::vector<PlacedShard> AssignMemoryShards(const PlacementPlan& plan, int memory_shards,
                                            int64_t table_bytes, int64_t table_columns);

// "1.5 GiB": bytes in GiB with one decimal; below 1 GiB in MiB ("16.0 MiB").
std::string FormatGiB(int64_t bytes);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_RUNTIME_PLACEMENT_PLAN_H_
