#include "engine/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/file_util.h"
#include "engine/status_macros.h"
#include "engine/strict_json.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

using json = nlohmann::json;

// Upper limits. They are far above any published configuration and keep
// every product the runtime forms (e.g. n_heads * head_dim, n_keys^2) well
// inside int32 / int64.
constexpr int64_t kMaxDim = 1 << 16;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxFfnHidden = 1 << 20;
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxSeqlen = 1 << 24;
constexpr int64_t kMaxNKeys = 46340;  // n_keys^2 rows fit in int32
constexpr int64_t kMaxMemHeads = 1024;
constexpr int64_t kMaxKnn = 1024;
constexpr int64_t kMaxKDim = 1 << 16;
constexpr int64_t kMaxVDim = 1 << 16;
constexpr size_t kMaxConfigBytes = 64 << 20;
constexpr int kMaxJsonDepth = 64;

constexpr char kFormat[] = "memserve-llama-pk";
constexpr int64_t kFormatVersion = 1;

absl::Status FieldError(absl::string_view field, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("config field \"", field, "\": ", msg));
}

const char* TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number with a fraction or exponent";
    default:
      return "an unsupported JSON value";
  }
}

// A short, printable rendering of a JSON value for error messages.
std::string Show(const json& v) {
  std::string s = v.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

std::string Path(absl::string_view prefix, absl::string_view key) {
  return prefix.empty() ? std::string(key) : absl::StrCat(prefix, ".", key);
}

// Read access to one JSON object with a field-path prefix for messages.
// A member that is absent or JSON null counts as "not given".
class Obj {
 public:
  Obj(const json& j, std::string prefix) : j_(j), prefix_(std::move(prefix)) {}

  const json* Find(absl::string_view key) const {
    auto it = j_.find(std::string(key));
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::string Field(absl::string_view key) const { return Path(prefix_, key); }

  // Integer in [lo, hi]. If absent: error when `required`, else `*out` is kept.
  absl::Status Int(absl::string_view key, bool required, int64_t lo, int64_t hi, int* out) const {
    const json* v = Find(key);
    if (v == nullptr) {
      if (required) return FieldError(Field(key), "is required (an integer)");
      return absl::OkStatus();
    }
    int64_t value = 0;
    RETURN_IF_ERROR(AsInt(*v, Field(key), &value));
    if (value < lo || value > hi) {
      return FieldError(Field(key), absl::StrCat(value, " is out of range [", lo, ", ", hi, "]"));
    }
    *out = static_cast<int>(value);
    return absl::OkStatus();
  }

  absl::Status Bool(absl::string_view key, bool* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) {
      return FieldError(Field(key),
                        absl::StrCat("must be true or false, got ", TypeName(*v), " ", Show(*v)));
    }
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(absl::string_view key, bool required, std::string* out) const {
    const json* v = Find(key);
    if (v == nullptr) {
      if (required) return FieldError(Field(key), "is required (a string)");
      return absl::OkStatus();
    }
    if (!v->is_string()) {
      return FieldError(Field(key),
                        absl::StrCat("must be a string, got ", TypeName(*v), " ", Show(*v)));
    }
    *out = v->get_ref<const std::string&>();
    return absl::OkStatus();
  }

  // A finite number > 0 and < `below` (exclusive).
  absl::Status PositiveFloat(absl::string_view key, double below, float* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) {
      return FieldError(Field(key),
                        absl::StrCat("must be a number, got ", TypeName(*v), " ", Show(*v)));
    }
    const double d = v->get<double>();
    if (!std::isfinite(d) || d <= 0 || d >= below) {
      return FieldError(Field(key), absl::StrCat(Show(*v), " is out of range (0, ", below, ")"));
    }
    *out = static_cast<float>(d);
    if (!(*out > 0)) return FieldError(Field(key), absl::StrCat(Show(*v), " underflows float32"));
    return absl::OkStatus();
  }

  static absl::Status AsInt(const json& v, absl::string_view field, int64_t* out) {
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return FieldError(field, absl::StrCat(u, " is too large"));
      }
      *out = static_cast<int64_t>(u);
      return absl::OkStatus();
    }
    if (v.is_number_integer()) {
      *out = v.get<int64_t>();
      return absl::OkStatus();
    }
    return FieldError(field, absl::StrCat("must be an integer, got ", TypeName(v), " ", Show(v)));
  }

 private:
  const json& j_;
  std::string prefix_;
};

absl::Status ParseMemory(const json& j, const ModelConfig& cfg, MemoryConfig* mem) {
  if (!j.is_object()) {
    return FieldError("memory", absl::StrCat("must be an object or null, got ", TypeName(j)));
  }
  Obj o(j, "memory");

  bool peer = false;
  RETURN_IF_ERROR(o.Bool("peer_variant", &peer));
  if (peer) {
    return absl::UnimplementedError(
        "config field \"memory.peer_variant\": the PEER memory variant is not supported");
  }

  const json* layers = o.Find("layers");
  if (layers == nullptr)
    return FieldError("memory.layers", "is required (a list of layer indices)");
  if (!layers->is_array()) {
    return FieldError("memory.layers",
                      absl::StrCat("must be a list of integers, got ", TypeName(*layers)));
  }
  mem->layers.clear();
  for (size_t i = 0; i < layers->size(); ++i) {
    const std::string field = absl::StrCat("memory.layers[", i, "]");
    int64_t v = 0;
    RETURN_IF_ERROR(Obj::AsInt((*layers)[i], field, &v));
    if (v < 0 || v >= cfg.n_layers) {
      return FieldError(
          field, absl::StrCat("layer ", v, " is out of range [0, n_layers=", cfg.n_layers, ")"));
    }
    mem->layers.push_back(static_cast<int>(v));
  }
  std::sort(mem->layers.begin(), mem->layers.end());
  for (size_t i = 1; i < mem->layers.size(); ++i) {
    if (mem->layers[i] == mem->layers[i - 1]) {
      return FieldError("memory.layers",
                        absl::StrCat("layer ", mem->layers[i], " is listed twice"));
    }
  }

  RETURN_IF_ERROR(o.Int("n_keys", true, 1, kMaxNKeys, &mem->n_keys));
  RETURN_IF_ERROR(o.Int("heads", true, 1, kMaxMemHeads, &mem->heads));
  if (mem->heads < 2) {  // the training code's HashingMemory asserts mem_heads >= 2
    return FieldError("memory.heads", absl::StrCat(mem->heads,
                                                   " is below 2 (the training code needs at least "
                                                   "two memory heads)"));
  }
  RETURN_IF_ERROR(o.Int("knn", true, 1, kMaxKnn, &mem->knn));
  if (mem->knn > mem->n_keys) {
    return FieldError("memory.knn", absl::StrCat(mem->knn, " exceeds memory.n_keys=", mem->n_keys));
  }
  RETURN_IF_ERROR(o.Int("k_dim", true, 2, kMaxKDim, &mem->k_dim));
  if (mem->k_dim % 2 != 0) {
    return FieldError("memory.k_dim", absl::StrCat(mem->k_dim, " must be even (two halves)"));
  }
  // v_dim: absent or -1 means "dim" (the training code's mem_v_dim=-1).
  mem->v_dim = cfg.dim;
  if (const json* v = o.Find("v_dim")) {
    int64_t vd = 0;
    RETURN_IF_ERROR(Obj::AsInt(*v, "memory.v_dim", &vd));
    if (vd != -1) {
      if (vd < 1 || vd > kMaxVDim) {
        return FieldError("memory.v_dim",
                          absl::StrCat(vd, " is out of range [1, ", kMaxVDim, "] (or -1 = dim)"));
      }
      mem->v_dim = static_cast<int>(vd);
    }
  }
  RETURN_IF_ERROR(o.Bool("share_values", &mem->share_values));
  RETURN_IF_ERROR(o.Bool("swilu_projection", &mem->swilu_projection));
  mem->value_proj = mem->swilu_projection || mem->v_dim != cfg.dim;
  RETURN_IF_ERROR(o.Bool("value_proj", &mem->value_proj));
  RETURN_IF_ERROR(o.Bool("gated", &mem->gated));
  if (mem->swilu_projection && !mem->value_proj) {
    return FieldError("memory.value_proj", "must be true when memory.swilu_projection is true");
  }
  if (!mem->value_proj && mem->v_dim != cfg.dim) {
    return FieldError(
        "memory.value_proj",
        absl::StrCat("must be true when memory.v_dim (", mem->v_dim, ") != dim (", cfg.dim,
                     "): the memory output is added to the residual stream"));
  }
  return absl::OkStatus();
}

absl::Status ParseTokenizer(const json& j, const ModelConfig& cfg, TokenizerConfig* tok) {
  if (!j.is_object()) {
    return FieldError("tokenizer", absl::StrCat("must be an object, got ", TypeName(j)));
  }
  Obj o(j, "tokenizer");
  RETURN_IF_ERROR(o.String("kind", true, &tok->kind));
  RETURN_IF_ERROR(o.String("file", false, &tok->file));
  if (tok->kind == "tiktoken") {
    return absl::UnimplementedError(
        "config field \"tokenizer.kind\": \"tiktoken\" tokenizers are not supported yet "
        "(supported: bytes, sp)");
  }
  if (tok->kind == "bytes") {
    if (!tok->file.empty()) {
      return FieldError("tokenizer.file", "must be empty for tokenizer.kind \"bytes\"");
    }
    tok->bos_id = 256;
    tok->eos_id = 257;
    RETURN_IF_ERROR(o.Int("bos_id", false, 256, 256, &tok->bos_id));
    RETURN_IF_ERROR(o.Int("eos_id", false, 257, 257, &tok->eos_id));
    if (cfg.vocab_size < 258) {
      return FieldError(
          "vocab_size",
          absl::StrCat(cfg.vocab_size, " is smaller than the bytes tokenizer's 258 ids"));
    }
  } else if (tok->kind == "sp") {
    if (tok->file.empty()) {
      return FieldError("tokenizer.file",
                        "is required for tokenizer.kind \"sp\" (e.g. \"tokenizer.model\")");
    }
    if (tok->file.front() == '/') {
      return FieldError("tokenizer.file", "must be relative to the checkpoint directory");
    }
    RETURN_IF_ERROR(o.Int("bos_id", true, 0, cfg.vocab_size - 1, &tok->bos_id));
    RETURN_IF_ERROR(o.Int("eos_id", true, 0, cfg.vocab_size - 1, &tok->eos_id));
  } else {
    return FieldError("tokenizer.kind",
                      absl::StrCat("unknown kind \"", tok->kind, "\" (supported: bytes, sp)"));
  }
  return absl::OkStatus();
}

absl::Status Parse(const json& root, ModelConfig* cfg) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config must be a JSON object, got ", TypeName(root)));
  }
  Obj o(root, "");

  std::string format;
  RETURN_IF_ERROR(o.String("format", true, &format));
  if (format != kFormat) {
    return FieldError("format",
                      absl::StrCat("unknown format \"", format, "\" (expected \"", kFormat, "\")"));
  }
  const json* version = o.Find("format_version");
  if (version == nullptr) return FieldError("format_version", "is required (an integer)");
  int64_t v = 0;
  RETURN_IF_ERROR(Obj::AsInt(*version, "format_version", &v));
  if (v != kFormatVersion) {
    return FieldError("format_version", absl::StrCat("unsupported version ", v,
                                                     " (this build reads ", kFormatVersion, ")"));
  }

  RETURN_IF_ERROR(o.Int("dim", true, 1, kMaxDim, &cfg->dim));
  RETURN_IF_ERROR(o.Int("n_layers", true, 1, kMaxLayers, &cfg->n_layers));
  RETURN_IF_ERROR(o.Int("n_heads", true, 1, kMaxHeads, &cfg->n_heads));
  cfg->n_kv_heads = cfg->n_heads;
  RETURN_IF_ERROR(o.Int("n_kv_heads", false, 1, cfg->n_heads, &cfg->n_kv_heads));
  if (cfg->n_heads % cfg->n_kv_heads != 0) {
    return FieldError("n_kv_heads",
                      absl::StrCat(cfg->n_kv_heads, " does not divide n_heads=", cfg->n_heads));
  }
  cfg->head_dim = 0;
  RETURN_IF_ERROR(o.Int("head_dim", false, 0, kMaxHeadDim, &cfg->head_dim));
  if (cfg->head_dim == 0) {  // absent, null or 0: dim / n_heads
    if (cfg->dim % cfg->n_heads != 0) {
      return FieldError("n_heads", absl::StrCat(cfg->n_heads, " does not divide dim=", cfg->dim,
                                                " (give head_dim explicitly)"));
    }
    cfg->head_dim = cfg->dim / cfg->n_heads;
  }
  if (cfg->head_dim % 2 != 0) {
    return FieldError("head_dim",
                      absl::StrCat(cfg->head_dim, " must be even (RoPE rotates pairs)"));
  }
  RETURN_IF_ERROR(o.Int("vocab_size", true, 1, kMaxVocab, &cfg->vocab_size));
  RETURN_IF_ERROR(o.Int("max_seqlen", true, 1, kMaxSeqlen, &cfg->max_seqlen));
  RETURN_IF_ERROR(o.PositiveFloat("norm_eps", 1.0, &cfg->norm_eps));
  RETURN_IF_ERROR(o.PositiveFloat("rope_theta", 1e30, &cfg->rope_theta));
  cfg->sliding_window = 0;
  RETURN_IF_ERROR(o.Int("sliding_window", false, 0, kMaxSeqlen, &cfg->sliding_window));

  cfg->memory = MemoryConfig();
  if (const json* mem = o.Find("memory")) {
    RETURN_IF_ERROR(ParseMemory(*mem, *cfg, &cfg->memory));
  }
  // Dense (SwiGLU) layers need a hidden size; an all-memory model does not.
  const bool has_dense = static_cast<int>(cfg->memory.layers.size()) < cfg->n_layers;
  cfg->ffn_hidden_dim = 0;
  RETURN_IF_ERROR(
      o.Int("ffn_hidden_dim", has_dense, has_dense ? 1 : 0, kMaxFfnHidden, &cfg->ffn_hidden_dim));

  const json* tok = o.Find("tokenizer");
  if (tok == nullptr)
    return FieldError("tokenizer", "is required (an object with kind, file, bos_id, eos_id)");
  RETURN_IF_ERROR(ParseTokenizer(*tok, *cfg, &cfg->tokenizer));

  cfg->chat_template = "plain";
  RETURN_IF_ERROR(o.String("chat_template", false, &cfg->chat_template));
  // The templates engine/chat_template.h renders (config cannot depend on it:
  // it depends on the tokenizer, which depends on config); chat_template_test
  // checks that the two lists agree.
  constexpr const char* kChatTemplates[] = {"plain", "llama2", "llama3", "raw"};
  if (std::find(std::begin(kChatTemplates), std::end(kChatTemplates), cfg->chat_template) ==
      std::end(kChatTemplates)) {
    return FieldError("chat_template",
                      absl::StrCat("unknown template ", Show(json(cfg->chat_template)),
                                   " (supported: plain, llama2, llama3, raw)"));
  }
  // "source" and any other top-level key are informational and ignored.
  return absl::OkStatus();
}

constexpr char kConvertCommand[] = "/usr/bin/python3 tools/convert_lingua.py";

// Why `dir` has no config.json, in words the user can act on: no such
// directory, not a directory, a training checkpoint (and the command that
// converts it), or a directory that is no checkpoint at all.
absl::Status NoConfigError(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path d(dir);
  if (!fs::exists(d, ec)) return absl::NotFoundError(absl::StrCat(dir, ": no such directory"));
  if (!fs::is_directory(d, ec)) {
    return absl::NotFoundError(
        absl::StrCat(dir,
                     ": not a directory (a serving checkpoint is a directory with config.json; "
                     "docs/checkpoint-format.md)"));
  }
  const auto has = [&](const char* name) { return fs::exists(d / name, ec); };
  if (has("consolidated.pth")) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir,
                     " is a training checkpoint (consolidated.pth + params.json), not a serving "
                     "checkpoint; convert it with: ",
                     kConvertCommand, " ", dir, " MODEL_DIR"));
  }
  if (has("consolidated/consolidated.pth")) {
    const std::string sub = (d / "consolidated").string();
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " is a training checkpoint (its consolidated copy is in ", sub,
        "), not a serving checkpoint; convert it with: ", kConvertCommand, " ", sub, " MODEL_DIR"));
  }
  if (has("params.json")) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir,
        " is a training checkpoint (params.json) without consolidated.pth; consolidate it "
        "with the training code, then convert it with: ",
        kConvertCommand, " CKPT_DIR MODEL_DIR"));
  }
  return absl::NotFoundError(
      absl::StrCat(dir,
                   " has no config.json: not a serving checkpoint (docs/checkpoint-format.md); a "
                   "training checkpoint (consolidated.pth + params.json) converts with: ",
                   kConvertCommand, " CKPT_DIR MODEL_DIR"));
}

}  // namespace

bool ModelConfig::IsMemoryLayer(int layer) const {
  return std::binary_search(memory.layers.begin(), memory.layers.end(), layer);
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view json_text) {
  json root;
  absl::Status st = ParseStrictJson(json_text, kMaxJsonDepth, &root);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config is not valid JSON: ", st.message()));
  }
  ModelConfig cfg;
  RETURN_IF_ERROR(Parse(root, &cfg));
  return cfg;
}

absl::StatusOr<ModelConfig> ModelConfig::LoadFromDir(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::string text;
  if (absl::Status read = ReadSmallFile(path, kMaxConfigBytes, &text); !read.ok()) {
    return read.code() == absl::StatusCode::kNotFound ? NoConfigError(dir) : read;
  }
  absl::StatusOr<ModelConfig> cfg = FromJson(text);
  if (!cfg.ok()) {
    return absl::Status(cfg.status().code(), absl::StrCat(path, ": ", cfg.status().message()));
  }
  return cfg;
}

}  // namespace memserve
