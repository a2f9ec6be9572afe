// LoadModel: the one assembly path from a checkpoint directory to a model on
// a device plus its tokenizer. Engine::Create builds on it; `memserve
// generate` (one request, no engine) uses it directly. Nothing else calls
// Model::Load in production code.
#ifndef MEMSERVE_ENGINE_LOAD_MODEL_H_
#define MEMSERVE_ENGINE_LOAD_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend_factory.h"
#include "engine/model.h"
#include "engine/runtime/placement_plan.h"
#include "engine/tokenizer.h"

namespace memserve {

struct LoadOptions {
  std::string model_dir;  // serving checkpoint (docs/checkpoint-format.md)
  Device device = Device::kCpu;
  int threads = 0;        // CPU threads for the ops; 0 = one per hardware thread
  int memory_shards = 1;  // column shards of the memory value tables (ModelOptions)
  // The K/V cache's element type (--kv_cache_dtype), resolved for `device`
  // by ResolveKvCacheDtype.
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kAuto;
  // --cpu_matmul_precision (MakeBackend; bf16 is refused off the CPU and on
  // CPUs without AVX512-BF16).
  CpuMatMulPrecision cpu_matmul_precision = CpuMatMulPrecision::kExact;
  // Where the memory value tables go (--memory_placement, --memory_gpus: 0
  // = all visible GPUs), planned by PlanPlacement
  // (engine/runtime/placement_plan.h) once the checkpoint is checked: on the
  // CPU always host (the mapping, in place; device and sharded are refused);
  // on CUDA device, sharded or host by the GPUs' free memory, the host's
  // RAM and kv_cache_bytes (the K/V cache budget kept on GPU 0; < 0 = one
  // sequence of max_seqlen).
  MemoryPlacement memory_placement = MemoryPlacement::kAuto;
  int memory_gpus = 0;
  int64_t kv_cache_bytes = -1;
};

// What LoadModel returns: the model and its tokenizer, ready to run. The
// tokenizer does not refer to the model; the model lives on `device`.
struct LoadedModel {
  Device device = Device::kCpu;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Checks the device, the K/V cache dtype and the memory placement flags
// (CheckMemoryPlacement, before touching the files),
// loads config, weights and tokenizer. Errors: Unimplemented for a device
// this build lacks, Unavailable for a device that is not visible;
// InvalidArgument for --kv_cache_dtype bf16 on the CPU, a placement the
// device cannot have; ResourceExhausted when the plan finds no placement
// that fits (PlanPlacement's message); InvalidArgument for a bad config or
// tokenizer setting; NotFound, DataLoss
// and the like for a missing or corrupt checkpoint, naming the file.
absl::StatusOr<LoadedModel> LoadModel(const LoadOptions& options);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_LOAD_MODEL_H_
