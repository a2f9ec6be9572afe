#include "engine/load_model.h"

#include <utility>

#include "engine/status_macros.h"

namespace memserve {

absl::StatusOr<LoadedModel> LoadModel(const LoadOptions& options) {
  LoadedModel out;
  out.device = options.device;
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                   MakeBackend(options.device, options.threads));
  ASSIGN_OR_RETURN(out.model, Model::Load(options.model_dir, std::move(backend)));
  ASSIGN_OR_RETURN(out.tokenizer,
                   Tokenizer::Create(out.model->config().tokenizer, options.model_dir));
  return out;
}

}  // namespace memserve
