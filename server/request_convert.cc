#include "server/request_convert.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/chat_template.h"
#include "engine/generate.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

absl::Status WithPrefix(absl::string_view prefix, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// Fills `out` from the sampling fields, given the prompt it will follow.
absl::Status ConvertSampling(const v1::SamplingParams& p, absl::string_view prompt_field,
                             int prompt_tokens, const ModelConfig& config,
                             const ConvertOptions& options, EngineRequest* out) {
  if (prompt_tokens >= config.max_seqlen) {
    return absl::InvalidArgumentError(absl::StrCat(
        prompt_field, ": the prompt is ", prompt_tokens, " tokens; the model's context (max_seqlen) is ",
        config.max_seqlen, " tokens, which leaves no room to generate"));
  }
  GenerateOptions& o = out->options;
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
  const int context_left = config.max_seqlen - prompt_tokens;
  o.max_tokens =
      p.has_max_tokens() ? p.max_tokens() : std::min(options.default_max_tokens, context_left);
  o.min_tokens = p.min_tokens();
  o.stop.assign(p.stop().begin(), p.stop().end());
  o.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  o.ignore_eos = p.ignore_eos();
  o.logprobs = p.logprobs();
  o.include_stop_str = p.include_stop_str();
  RETURN_IF_ERROR(WithPrefix("sampling.", ValidateSamplingOptions(o, config)));
  if (o.max_tokens > context_left) {
    return absl::InvalidArgumentError(absl::StrCat(
        prompt_field, ": the prompt (", prompt_tokens, " tokens) + sampling.max_tokens (",
        o.max_tokens,
        ") exceeds the model's context of ", config.max_seqlen, " tokens (max_seqlen)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> EncodeText(absl::string_view field, const std::string& text,
                                            const Tokenizer& tokenizer) {
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  if (text.size() > kMaxPromptBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is ", text.size(),
                                                   " bytes; the limit is ", kMaxPromptBytes,
                                                   " (max_prompt_bytes)"));
  }
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not valid UTF-8"));
  }
  absl::StatusOr<std::vector<int>> ids = tokenizer.Encode(text, /*add_bos=*/true);
  if (!ids.ok()) return WithPrefix(absl::StrCat(field, ": "), ids.status());
  return ids;
}

}  // namespace

absl::Status ValidateRequestId(const std::string& id) {
  if (id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id is ", id.size(), " bytes; the limit is ", kMaxRequestIdBytes));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(id[i]);
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("request_id must be printable ASCII without spaces; byte ", i, " is 0x",
                       absl::Hex(c, absl::kZeroPad2)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EngineRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                              const Tokenizer& tokenizer, const ModelConfig& config,
                                              const ConvertOptions& options) {
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  EngineRequest out;
  switch (request.input_case()) {
    case v1::GenerateRequest::kText: {
      ASSIGN_OR_RETURN(out.prompt, EncodeText("text", request.text(), tokenizer));
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) {
        return absl::InvalidArgumentError("token_ids is empty (at least 1 id is required)");
      }
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= config.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("token_ids[", i, "] = ", ids[i],
                                                         " is outside the vocabulary [0, ",
                                                         config.vocab_size, ")"));
        }
      }
      out.prompt.assign(ids.begin(), ids.end());
      break;
    }
    default:
      return absl::InvalidArgumentError("input: set exactly one of text and token_ids");
  }
  const char* field = request.input_case() == v1::GenerateRequest::kText ? "text" : "token_ids";
  RETURN_IF_ERROR(ConvertSampling(request.sampling(), field, static_cast<int>(out.prompt.size()),
                                  config, options, &out));
  return out;
}

absl::StatusOr<EngineRequest> ToEngineRequest(const v1::ChatRequest& request,
                                              const Tokenizer& tokenizer, const ModelConfig& config,
                                              const ConvertOptions& options) {
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  std::vector<ChatMessage> messages;
  messages.reserve(request.messages_size());
  for (const v1::ChatMessage& m : request.messages()) messages.push_back({m.role(), m.content()});
  ASSIGN_OR_RETURN(std::string text, RenderChat(options.chat_template, messages));
  EngineRequest out;
  ASSIGN_OR_RETURN(out.prompt, EncodeText("messages (rendered)", text, tokenizer));
  RETURN_IF_ERROR(ConvertSampling(request.sampling(), "messages (rendered)",
                                  static_cast<int>(out.prompt.size()), config, options, &out));
  return out;
}

}  // namespace memserve
