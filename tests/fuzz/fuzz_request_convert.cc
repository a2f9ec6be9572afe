// Fuzz target: API request bytes -> engine request (server/api/request_convert.h,
// engine/request/validate.h), as the gRPC service does after parsing.
//
// Input: byte 0 picks the message (even: GenerateRequest, odd: ChatRequest)
// and the chat template (KnownChatTemplates()[byte / 2 % n]); the rest is the
// serialized proto. Inputs that do not parse are skipped (gRPC refuses
// them before conversion). Invariants of an accepted request: it passes
// ValidateRequest again, its prompt is non-empty and in the vocabulary, and
// prompt + max_tokens fits the context.
#include <memory>
#include <string>

#include "engine/chat_template.h"
#include "engine/config.h"
#include "engine/request/validate.h"
#include "engine/tokenizer.h"
#include "memserve/v1/memserve.pb.h"
#include "server/api/request_convert.h"
#include "tests/fuzz/fuzz_target.h"

namespace memserve {
namespace {

// The demo model's limits (models/demo/config.json): byte tokenizer, 258
// ids, a context of 128.
constexpr char kConfig[] = R"({
  "format": "memserve-llama-pk", "format_version": 1, "dim": 128, "n_layers": 3,
  "n_heads": 4, "n_kv_heads": 4, "head_dim": 32, "ffn_hidden_dim": 352,
  "vocab_size": 258, "max_seqlen": 128, "norm_eps": 1e-05, "rope_theta": 10000.0,
  "sliding_window": 0,
  "memory": {"layers": [1], "n_keys": 256, "heads": 4, "knn": 16, "k_dim": 128,
             "v_dim": 128, "share_values": true, "swilu_projection": true,
             "value_proj": true, "gated": false},
  "tokenizer": {"kind": "bytes", "file": "", "bos_id": 256, "eos_id": 257},
  "chat_template": "raw"
})";

struct Fixture {
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
};

const Fixture& GetFixture() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture();
    absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(kConfig);
    FUZZ_CHECK(config.ok());
    f->config = *config;
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        Tokenizer::Create(f->config.tokenizer, "");
    FUZZ_CHECK(tokenizer.ok());
    f->tokenizer = *std::move(tokenizer);
    return f;
  }();
  return *fixture;
}

void CheckAccepted(const EngineRequest& request, const ModelConfig& config) {
  FUZZ_CHECK(ValidateRequest(request, config).ok());
  FUZZ_CHECK(!request.prompt.empty());
  FUZZ_CHECK(request.options.max_tokens >= 1);
  FUZZ_CHECK(static_cast<int64_t>(request.prompt.size()) + request.options.max_tokens <=
             config.max_seqlen);
  for (const int id : request.prompt) FUZZ_CHECK(id >= 0 && id < config.vocab_size);
}

}  // namespace
}  // namespace memserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memserve;  // NOLINT: a C entry point
  if (size < 1) return 0;
  const Fixture& f = GetFixture();
  ConvertOptions options;
  const auto& templates = KnownChatTemplates();
  options.chat_template = templates[(data[0] / 2) % templates.size()];
  const ApiFieldNames names = (data[0] & 4) ? HttpFieldNames() : ApiFieldNames();
  if (data[0] % 2 == 0) {
    v1::GenerateRequest request;
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    absl::StatusOr<EngineRequest> out =
        ToEngineRequest(request, *f.tokenizer, f.config, options, names);
    if (out.ok()) CheckAccepted(*out, f.config);
    if (!out.ok()) FUZZ_CHECK(out.status().code() == absl::StatusCode::kInvalidArgument);
  } else {
    v1::ChatRequest request;
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    absl::StatusOr<EngineRequest> out =
        ToEngineRequest(request, *f.tokenizer, f.config, options, names);
    if (out.ok()) CheckAccepted(*out, f.config);
    if (!out.ok()) FUZZ_CHECK(out.status().code() == absl::StatusCode::kInvalidArgument);
  }
  return 0;
}
