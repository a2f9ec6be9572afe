// Fuzz target: the checkpoint config parser (ModelConfig::FromJson,
// engine/config.h) on arbitrary bytes. Invariants: errors are
// InvalidArgument; an accepted config has positive sizes and a memory layer
// inside the model.
#include <string>

#include "engine/config.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memserve;  // NOLINT: a C entry point
  absl::StatusOr<ModelConfig> config =
      ModelConfig::FromJson(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(config->dim > 0 && config->n_layers > 0 && config->vocab_size > 0);
  FUZZ_CHECK(config->max_seqlen > 0);
  for (int layer = 0; layer < config->n_layers; ++layer) (void)config->IsMemoryLayer(layer);
  return 0;
}
