// Where the CUDA backend puts the memory value tables besides a device copy
// (--memory_placement, engine/runtime/placement_plan.h; docs/gpu.md, "The
// memory pool across GPUs").
//
// Host: the table stays in host memory. The checkpoint mapping's pages are
// registered with the driver (cudaHostRegister, read-only, mapped); when the
// driver refuses to register the file mapping, the table is copied into
// pinned, mapped host memory in chunks. Either way ValueGather reads the rows
// it needs over PCIe through the device pointer (cudaHostGetDevicePointer):
// heads * knn rows per token, nothing prefetched. One line per table:
//   memserve: cuda_host_table tensor=NAME bytes=N mode=registered|pinned-copy seconds=S gb_per_s=R
//
// Sharded: every shard's column slice of every table lives on its GPU (a
// shard on the model's GPU in the model backend's memory, others in a
// CudaBackend of their own), uploaded from the mapping row by row through two
// pinned staging buffers (the host copy of one chunk overlaps the DMA of the
// one before), one line per GPU:
//   memserve: memory_shard_upload gpu=G shards=K bytes=N seconds=S gb_per_s=R
// Gather: MemorySelect ran once, on the model's GPU; each shard gathers its
// columns into a slice ([T, width], dense) and the slices are copied into
// their columns of the output: on the model's GPU by a 2-D device copy, from
// another GPU by peer copies (the rows and weights there, the slice back),
// ordered with events. NCCL is not used (R slices of T x width floats per
// memory layer: peer copies move the same bytes). Shards all on the model's
// GPU can be captured in a step graph; shards on other GPUs cannot (the
// model then runs decode steps eagerly).
#ifndef MEMSERVE_ENGINE_BACKEND_CUDA_MEMORY_PLACEMENT_CUDA_H_
#define MEMSERVE_ENGINE_BACKEND_CUDA_MEMORY_PLACEMENT_CUDA_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/runtime/memory_pool.h"
#include "engine/weights.h"

namespace memserve {

class CudaBackend;

namespace cuda {

// Free memory of every visible GPU, in device order; empty when none is
// visible. Leaves the calling thread's current device as it was.
absl::StatusOr<std::vector<int64_t>> GpuFreeBytes();

// The host placement of `w` for `owner` (a CudaBackend whose device is
// current): a buffer of type "cuda-host" whose device address reads the
// host bytes. Errors: Internal / ResourceExhausted naming the CUDA call.
absl::StatusOr<std::unique_ptr<Buffer>> PlaceHostTable(const Backend* owner, const TensorView& w,
                                                       Tensor* tensor);

// The sharded placement of `tables` over `shards` (Backend::PlaceShardedTables)
// for the model running on `backend`. Errors: InvalidArgument for shards that
// do not tile the columns or a GPU that does not exist; the CUDA errors.
absl::StatusOr<std::unique_ptr<ShardedMemory>> PlaceShardedTables(
    CudaBackend& backend, const std::vector<TensorView>& tables,
    const std::vector<MemoryShard>& shards);

}  // namespace cuda
}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CUDA_MEMORY_PLACEMENT_CUDA_H_
