#include "server/api/request_convert.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/chat_template.h"
#include "engine/request/validate.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

absl::Status WithPrefix(absl::string_view prefix, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// Fills out->options from the sampling fields and validates the whole
// request (engine/request/validate.h), the prompt named `prompt_field`.
absl::Status ConvertSampling(const v1::SamplingParams& p, absl::string_view prompt_field,
                             const ModelConfig& config, const ConvertOptions& options,
                             const ApiFieldNames& api_names, EngineRequest* out) {
  FieldNames names;
  names.prompt = std::string(prompt_field);
  names.options = api_names.sampling_prefix;
  const int prompt_tokens = static_cast<int>(out->prompt.size());
  GenerateOptions& o = out->options;
  ASSIGN_OR_RETURN(
      o.max_tokens,
      ResolveMaxTokens(p.has_max_tokens() ? std::optional<int>(p.max_tokens()) : std::nullopt,
                       prompt_tokens, options.default_max_tokens, config, names));
  SamplingParams& s = o.sampling;
  s.temperature = p.has_temperature() ? p.temperature() : 1.0f;
  s.top_k = p.top_k();
  s.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  s.min_p = p.min_p();
  s.repetition_penalty = p.has_repetition_penalty() ? p.repetition_penalty() : 1.0f;
  s.frequency_penalty = p.frequency_penalty();
  s.presence_penalty = p.presence_penalty();
  s.has_seed = p.has_seed();
  s.seed = p.seed();
  o.min_tokens = p.min_tokens();
  o.stop.assign(p.stop().begin(), p.stop().end());
  o.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  o.ignore_eos = p.ignore_eos();
  o.logprobs = p.logprobs();
  o.include_stop_str = p.include_stop_str();
  return ValidateRequest(*out, config, names);
}

absl::StatusOr<std::vector<int>> EncodeText(absl::string_view field, const std::string& text,
                                            const Tokenizer& tokenizer) {
  RETURN_IF_ERROR(ValidatePromptText(field, text));
  absl::StatusOr<std::vector<int>> ids = tokenizer.Encode(text, /*add_bos=*/true);
  if (!ids.ok()) return WithPrefix(absl::StrCat(field, ": "), ids.status());
  return ids;
}

// ValidateRequestId's messages name "request_id"; a transport may name it
// otherwise (an HTTP header).
absl::Status CheckRequestId(const std::string& id, const ApiFieldNames& names) {
  absl::Status s = ValidateRequestId(id);
  if (s.ok() || names.request_id == "request_id") return s;
  std::string message(s.message());
  if (absl::StartsWith(message, "request_id")) message.erase(0, 10);
  return absl::Status(s.code(), absl::StrCat(names.request_id, message));
}

}  // namespace

ApiFieldNames HttpFieldNames() {
  ApiFieldNames names;
  names.text = "prompt";
  names.token_ids = "prompt";
  names.input = "prompt";
  names.sampling_prefix = "";
  names.request_id = "X-Request-Id";
  return names;
}

absl::StatusOr<EngineRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                              const Tokenizer& tokenizer, const ModelConfig& config,
                                              const ConvertOptions& options,
                                              const ApiFieldNames& names) {
  RETURN_IF_ERROR(CheckRequestId(request.request_id(), names));
  EngineRequest out;
  switch (request.input_case()) {
    case v1::GenerateRequest::kText: {
      ASSIGN_OR_RETURN(out.prompt, EncodeText(names.text, request.text(), tokenizer));
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      out.prompt.assign(ids.begin(), ids.end());
      break;
    }
    default:
      return absl::InvalidArgumentError(names.input == "input"
                                            ? "input: set exactly one of text and token_ids"
                                            : absl::StrCat(names.input, " is required"));
  }
  const std::string& field =
      request.input_case() == v1::GenerateRequest::kText ? names.text : names.token_ids;
  RETURN_IF_ERROR(ConvertSampling(request.sampling(), field, config, options, names, &out));
  return out;
}

absl::StatusOr<EngineRequest> ToEngineRequest(const v1::ChatRequest& request,
                                              const Tokenizer& tokenizer, const ModelConfig& config,
                                              const ConvertOptions& options,
                                              const ApiFieldNames& names) {
  RETURN_IF_ERROR(CheckRequestId(request.request_id(), names));
  std::vector<ChatMessage> messages;
  messages.reserve(request.messages_size());
  for (const v1::ChatMessage& m : request.messages()) messages.push_back({m.role(), m.content()});
  ASSIGN_OR_RETURN(std::string text, RenderChat(options.chat_template, messages));
  EngineRequest out;
  ASSIGN_OR_RETURN(out.prompt, EncodeText(names.rendered_chat, text, tokenizer));
  RETURN_IF_ERROR(
      ConvertSampling(request.sampling(), names.rendered_chat, config, options, names, &out));
  return out;
}

}  // namespace memserve
