#include "engine/request/validate.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "engine/tokenizer.h"

namespace memserve {
namespace {

absl::Status WithPrefix(absl::string_view prefix, const absl::Status& s) {
  if (s.ok() || prefix.empty()) return s;
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

absl::Status RangeError(absl::string_view field, float value, absl::string_view range) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be in ", range, ", got ", value));
}

// The options' own rules, messages without a prefix.
absl::Status CheckOptions(const GenerateOptions& o, const ModelConfig& config) {
  if (o.max_tokens < 1 || o.max_tokens > config.max_seqlen) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be in [1, ", config.max_seqlen,
                                                   "] (the model's max_seqlen), got ",
                                                   o.max_tokens));
  }
  if (o.min_tokens < 0 || o.min_tokens > o.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_tokens must be in [0, max_tokens = ", o.max_tokens, "], got ", o.min_tokens));
  }
  if (o.logprobs < 0 || o.logprobs > kMaxLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs must be in [0, ", kMaxLogprobs, "], got ", o.logprobs));
  }
  if (o.stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop has ", o.stop.size(), " strings; the limit is ", kMaxStopStrings));
  }
  for (size_t i = 0; i < o.stop.size(); ++i) {
    if (o.stop[i].empty() || o.stop[i].size() > static_cast<size_t>(kMaxStopStringBytes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop[", i, "] is ", o.stop[i].size(), " bytes; it must be 1 to ", kMaxStopStringBytes));
    }
    if (!IsValidUtf8(o.stop[i])) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is not valid UTF-8"));
    }
  }
  if (o.stop_token_ids.size() > static_cast<size_t>(kMaxStopTokenIds)) {
    return absl::InvalidArgumentError(absl::StrCat("stop_token_ids has ", o.stop_token_ids.size(),
                                                   " ids; the limit is ", kMaxStopTokenIds));
  }
  RETURN_IF_ERROR(ValidateTokenIds("stop_token_ids", o.stop_token_ids, config.vocab_size));
  return ValidateSamplingParams(o.sampling);
}

// Prompt ids: non-empty, each in the vocabulary.
absl::Status CheckPromptIds(absl::Span<const int> prompt, const ModelConfig& config,
                            const FieldNames& names) {
  if (prompt.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(names.prompt, " is empty (at least 1 token is required)"));
  }
  return ValidateTokenIds(names.prompt, prompt, config.vocab_size);
}

// prompt + max_tokens within the context.
absl::Status CheckContext(int64_t prompt_tokens, int max_tokens, const ModelConfig& config,
                          const FieldNames& names) {
  if (prompt_tokens + max_tokens > config.max_seqlen) {
    return absl::InvalidArgumentError(absl::StrCat(
        names.prompt, " (", prompt_tokens, " tokens) + ", names.options, "max_tokens (", max_tokens,
        ") exceeds the model's context of ", config.max_seqlen, " tokens (max_seqlen)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRequestId(absl::string_view id) {
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

absl::Status ValidateTextBytes(absl::string_view field, absl::string_view text) {
  if (text.size() > kMaxPromptBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is ", text.size(),
                                                   " bytes; the limit is ", kMaxPromptBytes,
                                                   " (max_prompt_bytes)"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePromptText(absl::string_view field, absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  RETURN_IF_ERROR(ValidateTextBytes(field, text));
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not valid UTF-8"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTokenIds(absl::string_view field, absl::Span<const int> ids, int vocab_size) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, "[", i, "] = ", ids[i], " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSamplingParams(const SamplingParams& p, absl::string_view prefix) {
  const auto field = [&](absl::string_view name) { return absl::StrCat(prefix, name); };
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return RangeError(field("temperature"), p.temperature, "[0, inf) (0 = greedy)");
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field("top_k"), " must be >= 0 (0 = off), got ", p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return RangeError(field("top_p"), p.top_p, "(0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return RangeError(field("min_p"), p.min_p, "[0, 1]");
  if (!(p.repetition_penalty > 0.0f &&
        p.repetition_penalty <= SamplingParams::kMaxRepetitionPenalty)) {
    return RangeError(field("repetition_penalty"), p.repetition_penalty, "(0, 10] (1 = off)");
  }
  if (!(std::fabs(p.frequency_penalty) <= SamplingParams::kMaxAbsFrequencyPenalty)) {
    return RangeError(field("frequency_penalty"), p.frequency_penalty, "[-2, 2]");
  }
  if (!(std::fabs(p.presence_penalty) <= SamplingParams::kMaxAbsPresencePenalty)) {
    return RangeError(field("presence_penalty"), p.presence_penalty, "[-2, 2]");
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const GenerateOptions& options, const ModelConfig& config,
                             absl::string_view prefix) {
  return WithPrefix(prefix, CheckOptions(options, config));
}

absl::Status ValidatePromptTokens(absl::Span<const int> prompt, int max_tokens,
                                  const ModelConfig& config, const FieldNames& names) {
  RETURN_IF_ERROR(CheckPromptIds(prompt, config, names));
  return CheckContext(static_cast<int64_t>(prompt.size()), max_tokens, config, names);
}

absl::Status ValidateRequest(const EngineRequest& request, const ModelConfig& config,
                             const FieldNames& names) {
  RETURN_IF_ERROR(CheckPromptIds(request.prompt, config, names));
  RETURN_IF_ERROR(ValidateOptions(request.options, config, names.options));
  return CheckContext(static_cast<int64_t>(request.prompt.size()), request.options.max_tokens,
                      config, names);
}

absl::Status ValidateGenerateOptions(const GenerateOptions& options, const ModelConfig& config) {
  if (!options.prompt_ids.empty()) {
    FieldNames names;
    names.prompt = "prompt_ids";
    RETURN_IF_ERROR(CheckPromptIds(options.prompt_ids, config, names));
    RETURN_IF_ERROR(ValidateOptions(options, config));
    return CheckContext(static_cast<int64_t>(options.prompt_ids.size()), options.max_tokens, config,
                        names);
  }
  RETURN_IF_ERROR(ValidatePromptText("prompt", options.prompt));
  return ValidateOptions(options, config);
}

absl::StatusOr<int> ResolveMaxTokens(std::optional<int> requested, int prompt_tokens,
                                     int default_max_tokens, const ModelConfig& config,
                                     const FieldNames& names) {
  if (prompt_tokens >= config.max_seqlen) {
    return absl::InvalidArgumentError(absl::StrCat(names.prompt, ": the prompt is ", prompt_tokens,
                                                   " tokens; the model's context (max_seqlen) is ",
                                                   config.max_seqlen,
                                                   " tokens, which leaves no room to generate"));
  }
  if (requested.has_value()) return *requested;
  return std::min(default_max_tokens, config.max_seqlen - prompt_tokens);
}

}  // namespace memserve
