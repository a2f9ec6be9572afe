#include "engine/load_model.h"

#include <utility>

#include "engine/status_macros.h"

namespace memserve {

absl::StatusOr<LoadedModel> LoadModel(const LoadOptions& options) {
  LoadedModel out;
  out.device = options.device;
  ModelOptions model_options;
  ASSIGN_OR_RETURN(model_options.kv_cache_dtype,
                   ResolveKvCacheDtype(options.device, options.kv_cache_dtype));
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(options.device, options.threads));
  model_options.num_threads = options.threads;
  model_options.memory_shards = options.memory_shards;
  ASSIGN_OR_RETURN(out.model, Model::Load(options.model_dir, std::move(backend), model_options));
  ASSIGN_OR_RETURN(out.tokenizer,
                   Tokenizer::Create(out.model->config().tokenizer, options.model_dir));
  return out;
}

}  // namespace memserve
