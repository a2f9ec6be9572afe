// Random checkpoints of every architecture option, written in C++ (no
// Python): the shapes tests/parity/parity_test.py covers against PyTorch
// (dense, GQA, gated, v_dim != dim, two memory layers sharing a table,
// unshared tables, no SwiGLU projection) plus a sliding window and bf16
// dense weights, for comparing backends on the whole model
// (model_on_backends_test). Test-only.
#ifndef MEMSERVE_ENGINE_BACKEND_TESTING_RANDOM_MODEL_H_
#define MEMSERVE_ENGINE_BACKEND_TESTING_RANDOM_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/dtype.h"

namespace memserve {

struct RandomModelSpec {
  std::string name;  // [a-z0-9_]
  int dim = 64;
  int n_layers = 2;
  int n_heads = 4;
  int n_kv_heads = 4;
  int head_dim = 16;
  int ffn_hidden = 96;
  int vocab = 260;  // byte tokenizer: 256 bytes + BOS + EOS + 2 spare
  int max_seqlen = 128;
  int sliding_window = 0;
  float rope_theta = 10000.0f;
  std::vector<int> mem_layers;  // empty: dense
  int n_keys = 16;
  int mem_heads = 4;
  int knn = 8;
  int k_dim = 32;
  int v_dim = 64;
  bool share_values = true;
  bool swilu = true;
  bool value_proj = true;
  bool gated = false;
  DType dense = DType::kF32;  // dense weights; memory values are always bf16
  uint32_t seed = 1;
};

// The architecture variants (names as in tests/parity, plus "sliding_window"
// and "bf16_dense").
std::vector<RandomModelSpec> ArchitectureVariants();

// Writes config.json and model.safetensors of `spec` with random weights
// into a fresh directory under $TEST_TMPDIR (or /tmp) and returns it.
absl::StatusOr<std::string> WriteRandomModel(const RandomModelSpec& spec);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_TESTING_RANDOM_MODEL_H_
