#include "engine/load_model.h"

#include <unistd.h>

#include <utility>
#include <vector>

#include "engine/status_macros.h"

namespace memserve {
namespace {

// Physical RAM: what host placement may keep the tables in (the mapping
// stays in the page cache; a pinned copy needs the same).
int64_t HostMemoryBytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

}  // namespace

absl::StatusOr<LoadedModel> LoadModel(const LoadOptions& options) {
  LoadedModel out;
  out.device = options.device;
  ModelOptions model_options;
  ASSIGN_OR_RETURN(model_options.kv_cache_dtype,
                   ResolveKvCacheDtype(options.device, options.kv_cache_dtype));
  RETURN_IF_ERROR(
      CheckMemoryPlacement(options.device, options.memory_placement, options.memory_gpus));
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                   MakeBackend(options.device, options.threads, options.cpu_matmul_precision));
  model_options.num_threads = options.threads;
  model_options.memory_shards = options.memory_shards;
  const Device device = options.device;
  const DType kv_dtype = model_options.kv_cache_dtype;
  model_options.plan_memory = [device, kv_dtype,
                               options](PlacementRequest request) -> absl::StatusOr<PlacementPlan> {
    if (device == Device::kCpu) {  // the mapping, used in place
      PlacementPlan plan;
      plan.placement = MemoryPlacement::kHost;
      plan.host_table_bytes = request.table_bytes;
      return plan;
    }
    request.placement = options.memory_placement;
    request.max_gpus = options.memory_gpus;
    ASSIGN_OR_RETURN(request.gpu_free_bytes, GpuFreeBytes());
    request.host_bytes = HostMemoryBytes();
    if (options.kv_cache_bytes >= 0) {
      request.kv_bytes = options.kv_cache_bytes;
    } else {
      // One sequence of max_seqlen: read from the checkpoint's config.
      ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::LoadFromDir(options.model_dir));
      request.kv_bytes = 2LL * config.n_layers * config.max_seqlen * config.n_kv_heads *
                         config.head_dim * static_cast<int64_t>(DTypeSize(kv_dtype));
    }
    return PlanPlacement(request);
  };
  ASSIGN_OR_RETURN(out.model, Model::Load(options.model_dir, std::move(backend), model_options));
  ASSIGN_OR_RETURN(out.tokenizer,
                   Tokenizer::Create(out.model->config().tokenizer, options.model_dir));
  return out;
}

}  // namespace memserve
