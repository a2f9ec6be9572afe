// ModelConfig: memserve's model description, parsed from a serving
// checkpoint's config.json (docs/checkpoint-format.md) and validated.
#ifndef MEMSERVE_ENGINE_CONFIG_H_
#define MEMSERVE_ENGINE_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memserve {

// The product-key memory layer (docs/model.md, "The memory layer").
struct MemoryConfig {
  std::vector<int> layers;      // sorted, unique layer indices; empty = dense model
  int n_keys = 0;               // sub-keys per half; the table has n_keys^2 rows
  int heads = 0;                // >= 2, as the training code requires
  int knn = 0;                  // <= n_keys
  int k_dim = 0;                // even; each half is k_dim/2
  int v_dim = 0;                // value row width (== dim when mem_v_dim was -1)
  bool share_values = true;     // one table (tensor "memory.values.weight") for all layers
  bool swilu_projection = true;
  bool value_proj = true;       // has value_proj (swilu_projection or mem_v_dim > 0)
  bool gated = false;

  int64_t rows() const { return static_cast<int64_t>(n_keys) * n_keys; }
};

struct TokenizerConfig {
  std::string kind;  // "bytes" or "sp"
  std::string file;  // relative to the checkpoint dir; empty for "bytes"
  int bos_id = -1;
  int eos_id = -1;
};

struct ModelConfig {
  int dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_hidden_dim = 0;  // SwiGLU hidden size of dense layers
  int vocab_size = 0;
  int max_seqlen = 0;      // positions >= max_seqlen are rejected
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  // 0 = full causal attention. A window is an explicit opt-in of config.json:
  // the training code never applies one, so the converter always writes 0.
  int sliding_window = 0;
  MemoryConfig memory;
  TokenizerConfig tokenizer;
  std::string chat_template = "plain";

  bool IsMemoryLayer(int layer) const;

  // Parses and validates config.json text. Errors are InvalidArgument and
  // name the offending field and the limit it broke.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view json_text);
  // Reads `<dir>/config.json`; errors name the file. Without config.json the
  // error says what `dir` is instead: NotFound for no such directory, not a
  // directory, or a directory without config.json; FailedPrecondition for a
  // training checkpoint (consolidated.pth / params.json), with the command
  // that converts it (tools/convert_lingua.py).
  static absl::StatusOr<ModelConfig> LoadFromDir(const std::string& dir);
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_CONFIG_H_
