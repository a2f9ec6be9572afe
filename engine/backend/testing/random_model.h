// Random checkpoints of every architecture option, written in C++ (no
// Python): the shapes tests/parity/parity_test.py covers against PyTorch
// (dense, GQA, gated, v_dim != dim, two memory layers sharing a table,
// unshared tables, no SwiGLU projection) plus a sliding window and bf16
// dense weights, for comparing backends on the whole model
// (model_on_backends_test). Test-only.
#ifndef MEMSERVE_ENGINE_BACKEND_TESTING_RANDOM_MODEL_H_
#define MEMSERVE_ENGINE_BACKEND_TESTING_RANDOM_MODEL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/dtype.h"
#include "engine/testing/safetensors_writer.h"

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

// Random weights of `spec`, drawn in a fixed order from spec.seed: the
// tensors (dense weights in spec.dense, memory values in bf16) and each
// tensor's values as the model reads them (bf16-rounded where stored as
// bf16), for tests with their own reference forward pass.
struct RandomCheckpoint {
  std::vector<testutil::TestTensor> tensors;
  std::map<std::string, std::vector<float>> weights;
};
RandomCheckpoint MakeRandomCheckpoint(const RandomModelSpec& spec);

// The config.json text of `spec`.
std::string RandomModelConfigJson(const RandomModelSpec& spec);

// Writes `config_json` and `tensors` (F32 tensors first, so that every
// tensor is aligned to its element size) as config.json and
// model.safetensors into a fresh directory under $TEST_TMPDIR (or /tmp)
// whose name starts with `name`, and returns it.
absl::StatusOr<std::string> WriteModelDir(const std::string& name, const std::string& config_json,
                                          std::vector<testutil::TestTensor> tensors);

// The same, the tensors split over `files` safetensors files
// (model-0000i-of-0000N.safetensors, tensor k in file k % files) listed in a
// model.safetensors.index.json weight_map (HF's sharded layout).
// REQUIRES: files >= 1.
absl::StatusOr<std::string> WriteShardedModelDir(const std::string& name,
                                                 const std::string& config_json,
                                                 std::vector<testutil::TestTensor> tensors,
                                                 int files);

// WriteModelDir of spec's config and random weights.
absl::StatusOr<std::string> WriteRandomModel(const RandomModelSpec& spec);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_TESTING_RANDOM_MODEL_H_
