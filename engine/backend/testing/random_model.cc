#include "engine/backend/testing/random_model.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/status_macros.h"
#include "engine/testing/safetensors_writer.h"

namespace memserve {

std::string RandomModelConfigJson(const RandomModelSpec& s) {
  std::string memory = "null";
  if (!s.mem_layers.empty()) {
    memory = absl::StrCat(
        R"({"layers": [)", absl::StrJoin(s.mem_layers, ", "), R"(], "n_keys": )", s.n_keys,
        R"(, "heads": )", s.mem_heads, R"(, "knn": )", s.knn, R"(, "k_dim": )", s.k_dim,
        R"(, "v_dim": )", s.v_dim, R"(, "share_values": )", s.share_values ? "true" : "false",
        R"(, "swilu_projection": )", s.swilu ? "true" : "false", R"(, "value_proj": )",
        s.value_proj ? "true" : "false", R"(, "gated": )", s.gated ? "true" : "false", "}");
  }
  return absl::StrCat(
      R"({"format": "memserve-llama-pk", "format_version": 1, "dim": )", s.dim, R"(, "n_layers": )",
      s.n_layers, R"(, "n_heads": )", s.n_heads, R"(, "n_kv_heads": )", s.n_kv_heads,
      R"(, "head_dim": )", s.head_dim, R"(, "ffn_hidden_dim": )", s.ffn_hidden,
      R"(, "vocab_size": )", s.vocab, R"(, "max_seqlen": )", s.max_seqlen,
      R"(, "norm_eps": 1e-05, "rope_theta": )", s.rope_theta, R"(, "sliding_window": )",
      s.sliding_window, R"(, "memory": )", memory,
      R"(, "tokenizer": {"kind": "bytes", "file": "", "bos_id": 256, "eos_id": 257}})");
}

std::vector<RandomModelSpec> ArchitectureVariants() {
  std::vector<RandomModelSpec> out;
  RandomModelSpec s;
  s.name = "dense";
  s.seed = 11;
  out.push_back(s);

  s = RandomModelSpec();
  s.name = "memory_gqa";
  s.n_kv_heads = 2;
  s.mem_layers = {1};
  s.seed = 12;
  out.push_back(s);

  s = RandomModelSpec();
  s.name = "gated";
  s.mem_layers = {0};
  s.gated = true;
  s.n_keys = 24;
  s.mem_heads = 2;
  s.knn = 16;
  s.k_dim = 16;
  s.seed = 13;
  out.push_back(s);

  s = RandomModelSpec();
  s.name = "v_dim_ne_dim";
  s.n_heads = 2;
  s.n_kv_heads = 1;
  s.head_dim = 32;
  s.mem_layers = {1};
  s.v_dim = 48;
  s.mem_heads = 3;
  s.knn = 6;
  s.k_dim = 24;
  s.seed = 14;
  out.push_back(s);

  s = RandomModelSpec();
  s.name = "shared_two_layers";
  s.dim = 96;
  s.n_layers = 3;
  s.n_heads = 6;
  s.n_kv_heads = 2;
  s.mem_layers = {0, 2};
  s.n_keys = 32;
  s.knn = 32;
  s.k_dim = 64;
  s.v_dim = 96;
  s.seed = 15;
  out.push_back(s);

  s = RandomModelSpec();
  s.name = "unshared_tables";
  s.n_layers = 3;
  s.mem_layers = {0, 2};
  s.share_values = false;
  s.mem_heads = 2;
  s.seed = 16;
  out.push_back(s);

  s = RandomModelSpec();
  s.name = "no_swilu";
  s.mem_layers = {1};
  s.swilu = false;
  s.rope_theta = 500000.0f;
  s.head_dim = 32;
  s.seed = 17;
  out.push_back(s);

  s = RandomModelSpec();
  s.name = "sliding_window";
  s.mem_layers = {1};
  s.sliding_window = 7;
  s.seed = 18;
  out.push_back(s);

  s = RandomModelSpec();
  s.name = "bf16_dense";
  s.n_kv_heads = 2;
  s.mem_layers = {1};
  s.gated = true;
  s.dense = DType::kBF16;
  s.seed = 19;
  out.push_back(s);
  return out;
}

RandomCheckpoint MakeRandomCheckpoint(const RandomModelSpec& s) {
  std::mt19937 rng(s.seed);
  RandomCheckpoint ck;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, DType dtype,
                 float mean = 0.0f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::normal_distribution<float> dist(mean, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) {
      x = dist(rng);
      if (dtype == DType::kBF16) x = Bf16ToF32(F32ToBf16(x));
    }
    ck.tensors.push_back(testutil::MakeTensor(name, dtype, std::move(shape), v));
    ck.weights[name] = std::move(v);
  };
  const DType d = s.dense;
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(s.dim));
  add("tok_embeddings.weight", {s.vocab, s.dim}, 1.0f, d);
  add("norm.weight", {s.dim}, 0.1f, d, 1.0f);
  add("output.weight", {s.vocab, s.dim}, in_scale, d);
  const int64_t rows = static_cast<int64_t>(s.n_keys) * s.n_keys;
  if (!s.mem_layers.empty() && s.share_values) {
    add("memory.values.weight", {rows, s.v_dim}, 1.0f, DType::kBF16);
  }
  for (int i = 0; i < s.n_layers; ++i) {
    const std::string p = absl::StrCat("layers.", i, ".");
    add(p + "attention_norm.weight", {s.dim}, 0.1f, d, 1.0f);
    add(p + "ffn_norm.weight", {s.dim}, 0.1f, d, 1.0f);
    add(p + "attention.wq.weight", {s.n_heads * s.head_dim, s.dim}, in_scale, d);
    add(p + "attention.wk.weight", {s.n_kv_heads * s.head_dim, s.dim}, in_scale, d);
    add(p + "attention.wv.weight", {s.n_kv_heads * s.head_dim, s.dim}, in_scale, d);
    add(p + "attention.wo.weight", {s.dim, s.n_heads * s.head_dim},
        1.0f / std::sqrt(static_cast<float>(s.n_heads * s.head_dim)), d);
    const std::string f = p + "feed_forward.";
    if (std::find(s.mem_layers.begin(), s.mem_layers.end(), i) == s.mem_layers.end()) {
      add(f + "w1.weight", {s.ffn_hidden, s.dim}, in_scale, d);
      add(f + "w3.weight", {s.ffn_hidden, s.dim}, in_scale, d);
      add(f + "w2.weight", {s.dim, s.ffn_hidden},
          1.0f / std::sqrt(static_cast<float>(s.ffn_hidden)), d);
      continue;
    }
    add(f + "keys", {2LL * s.mem_heads * s.n_keys, s.k_dim / 2}, 1.0f, d);
    add(f + "query_proj.query_mlps.0.weight", {s.mem_heads * s.k_dim, s.dim}, in_scale, d);
    add(f + "query_proj.query_mlps.0.bias", {s.mem_heads * s.k_dim}, 0.1f, d);
    if (s.swilu) {
      add(f + "swilu_projection.weight", {s.v_dim, s.dim}, in_scale, d);
      add(f + "swilu_projection.bias", {s.v_dim}, 0.1f, d);
    }
    if (s.value_proj) {
      add(f + "value_proj.weight", {s.dim, s.v_dim}, 1.0f / std::sqrt(static_cast<float>(s.v_dim)),
          d);
      add(f + "value_proj.bias", {s.dim}, 0.1f, d);
    }
    if (s.gated) {
      add(f + "gating.weight", {1, s.dim}, in_scale, d);
      add(f + "gating.bias", {1}, 0.1f, d);
    }
    if (!s.share_values) add(f + "values.weight", {rows, s.v_dim}, 1.0f, DType::kBF16);
  }
  return ck;
}

namespace {

// Sorts `tensors` F32 first (every tensor then aligned to its element size),
// makes a fresh directory whose name starts with `name` and writes
// config.json into it; returns the directory.
absl::StatusOr<std::string> StartModelDir(const std::string& name, const std::string& config_json,
                                          std::vector<testutil::TestTensor>* tensors) {
  std::stable_sort(tensors->begin(), tensors->end(),
                   [](const testutil::TestTensor& a, const testutil::TestTensor& b) {
                     return a.dtype == DType::kF32 && b.dtype != DType::kF32;
                   });
  const std::string dir = testutil::MakeTempDir(name);
  if (dir.empty()) return absl::InternalError("cannot make a temporary directory");
  RETURN_IF_ERROR(testutil::WriteFile(dir + "/config.json", config_json));
  return dir;
}

}  // namespace

absl::StatusOr<std::string> WriteModelDir(const std::string& name, const std::string& config_json,
                                          std::vector<testutil::TestTensor> tensors) {
  ASSIGN_OR_RETURN(const std::string dir, StartModelDir(name, config_json, &tensors));
  RETURN_IF_ERROR(
      testutil::WriteFile(dir + "/model.safetensors", testutil::SerializeSafetensors(tensors)));
  return dir;
}

absl::StatusOr<std::string> WriteShardedModelDir(const std::string& name,
                                                 const std::string& config_json,
                                                 std::vector<testutil::TestTensor> tensors,
                                                 int files) {
  ASSIGN_OR_RETURN(const std::string dir, StartModelDir(name, config_json, &tensors));
  std::vector<std::vector<testutil::TestTensor>> per_file(static_cast<size_t>(files));
  std::vector<std::string> map_entries;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const int f = static_cast<int>(k % static_cast<size_t>(files));
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", f + 1, files);
    map_entries.push_back(absl::StrCat("\"", tensors[k].name, "\": \"", file, "\""));
    per_file[static_cast<size_t>(f)].push_back(tensors[k]);
  }
  for (int f = 0; f < files; ++f) {
    RETURN_IF_ERROR(testutil::WriteFile(
        dir + "/" + absl::StrFormat("model-%05d-of-%05d.safetensors", f + 1, files),
        testutil::SerializeSafetensors(per_file[static_cast<size_t>(f)])));
  }
  RETURN_IF_ERROR(testutil::WriteFile(dir + "/model.safetensors.index.json",
                                      absl::StrCat("{\"metadata\": {}, \"weight_map\": {",
                                                   absl::StrJoin(map_entries, ", "), "}}")));
  return dir;
}

absl::StatusOr<std::string> WriteRandomModel(const RandomModelSpec& s) {
  return WriteModelDir(absl::StrCat("random_model_", s.name), RandomModelConfigJson(s),
                       MakeRandomCheckpoint(s).tensors);
}

}  // namespace memserve
