#include "engine/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "engine/stop_strings.h"

namespace memserve {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
  }
  return "unknown";
}

absl::Status ValidateGenerateOptions(const GenerateOptions& o, const ModelConfig& config) {
  if (o.prompt_ids.empty() && o.prompt.empty()) {
    return absl::InvalidArgumentError("prompt is empty");
  }
  if (o.prompt.size() > kMaxPromptBytes) {
    return absl::InvalidArgumentError(absl::StrCat("prompt is ", o.prompt.size(),
                                                   " bytes; the limit is ", kMaxPromptBytes));
  }
  if (o.prompt_ids.empty() && !IsValidUtf8(o.prompt)) {
    return absl::InvalidArgumentError("prompt is not valid UTF-8");
  }
  for (size_t i = 0; i < o.prompt_ids.size(); ++i) {
    if (o.prompt_ids[i] < 0 || o.prompt_ids[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt_ids[", i, "] = ", o.prompt_ids[i],
                                                     " is outside the vocabulary [0, ",
                                                     config.vocab_size, ")"));
    }
  }
  if (o.max_tokens < 1 || o.max_tokens > config.max_seqlen) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be in [1, ", config.max_seqlen,
                                                   "] (the model's max_seqlen), got ",
                                                   o.max_tokens));
  }
  if (o.logprobs < 0 || o.logprobs > kMaxLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs must be in [0, ", kMaxLogprobs, "], got ", o.logprobs));
  }
  if (o.stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return absl::InvalidArgumentError(absl::StrCat("stop has ", o.stop.size(),
                                                   " strings; the limit is ", kMaxStopStrings));
  }
  for (size_t i = 0; i < o.stop.size(); ++i) {
    if (o.stop[i].size() > static_cast<size_t>(kMaxStopStringBytes)) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is ", o.stop[i].size(),
                                                     " bytes; the limit is ",
                                                     kMaxStopStringBytes));
    }
    if (!IsValidUtf8(o.stop[i])) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is not valid UTF-8"));
    }
  }
  return o.sampling.Validate();
}

absl::StatusOr<GenerateResult> Generate(Model& model, const Tokenizer& tokenizer,
                                        const GenerateOptions& options,
                                        const std::function<void(const TokenEvent&)>& on_token) {
  const ModelConfig& config = model.config();
  RETURN_IF_ERROR(ValidateGenerateOptions(options, config));
  std::vector<int> prompt = options.prompt_ids;
  if (prompt.empty()) {
    ASSIGN_OR_RETURN(prompt, tokenizer.Encode(options.prompt, /*add_bos=*/true));
  }
  const int n_prompt = static_cast<int>(prompt.size());
  if (n_prompt + options.max_tokens > config.max_seqlen) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", n_prompt, " tokens) + max_tokens (", options.max_tokens,
        ") exceeds the model's context of ", config.max_seqlen, " tokens (max_seqlen)"));
  }

  GenerateResult result;
  result.prompt_tokens = n_prompt;
  auto cache = model.NewCache(n_prompt + options.max_tokens);
  Sampler sampler(options.sampling);
  IncrementalDecoder decoder(tokenizer);
  StopStringMatcher stops(options.stop, options.include_stop_str);

  std::vector<int> history = prompt;  // for repetition penalties
  std::vector<float> logits;
  RETURN_IF_ERROR(model.Forward(cache.get(), prompt, /*all_logits=*/false, &logits));
  for (int step = 0; step < options.max_tokens; ++step) {
    const int id = sampler.Sample(logits, history);
    TokenEvent ev;
    ev.id = id;
    TokenLogprobs lp = ComputeLogprobs(logits, id, options.logprobs);
    ev.logprob = lp.chosen;
    for (const auto& [tid, tlp] : lp.top) ev.top.push_back({tid, tlp});
    history.push_back(id);
    ++result.completion_tokens;

    const bool is_eos = id == tokenizer.eos_id() && !options.ignore_eos;
    if (is_eos) {
      result.finish_reason = FinishReason::kEos;
    } else {
      ev.text = stops.Push(decoder.Push(id));
      if (stops.stopped()) result.finish_reason = FinishReason::kStop;
    }
    result.text += ev.text;
    on_token(ev);
    if (is_eos || stops.stopped()) break;
    if (step + 1 == options.max_tokens) break;  // length; no forward needed
    int next[1] = {id};
    RETURN_IF_ERROR(model.Forward(cache.get(), absl::Span<const int>(next, 1), false, &logits));
  }
  if (!stops.stopped()) {
    result.trailing_text = stops.Push(decoder.Flush());
    if (stops.stopped()) {
      result.finish_reason = FinishReason::kStop;
    } else {
      result.trailing_text += stops.Flush();
    }
    result.text += result.trailing_text;
  }
  return result;
}

}  // namespace memserve
