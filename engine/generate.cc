#include "engine/generate.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

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

RequestDecoder::RequestDecoder(const Tokenizer& tokenizer, const GenerateOptions& options,
                               std::vector<int> prompt)
    : tokenizer_(tokenizer),
      options_(options),
      sampler_(options.sampling),
      decoder_(tokenizer),
      stops_(options.stop, options.include_stop_str),
      tokens_(std::move(prompt)),
      prompt_tokens_(static_cast<int>(tokens_.size())) {
  result_.prompt_tokens = prompt_tokens_;
}

TokenEvent RequestDecoder::Next(absl::Span<const float> logits) {
  const bool before_min = result_.completion_tokens < options_.min_tokens;
  absl::Span<const float> sample_from = logits;
  if (before_min) {  // EOS and stop tokens cannot end generation yet
    masked_.assign(logits.begin(), logits.end());
    const float kNeverSampled = -std::numeric_limits<float>::infinity();
    if (!options_.ignore_eos && tokenizer_.eos_id() >= 0 &&
        tokenizer_.eos_id() < static_cast<int>(masked_.size())) {
      masked_[tokenizer_.eos_id()] = kNeverSampled;
    }
    for (int id : options_.stop_token_ids) masked_[id] = kNeverSampled;
    sample_from = masked_;
  }
  const int id = sampler_.Sample(sample_from, tokens_);
  TokenEvent ev;
  ev.id = id;
  TokenLogprobs lp = ComputeLogprobs(logits, id, options_.logprobs);
  ev.logprob = lp.chosen;
  for (const auto& [tid, tlp] : lp.top) ev.top.push_back({tid, tlp});
  tokens_.push_back(id);
  ++result_.completion_tokens;

  const bool is_stop_token =
      std::find(options_.stop_token_ids.begin(), options_.stop_token_ids.end(), id) !=
      options_.stop_token_ids.end();
  if (id == tokenizer_.eos_id() && !options_.ignore_eos) {
    result_.finish_reason = FinishReason::kEos;
    done_ = true;
  } else if (is_stop_token) {
    result_.finish_reason = FinishReason::kStop;
    result_.stop_token_id = id;
    done_ = true;
    // The stop token's text only with include_stop_str; held-back text is
    // released at Finish.
    if (options_.include_stop_str) ev.text = stops_.Push(decoder_.Push(id));
  } else if (before_min) {
    // Stop strings are matched only in the text of tokens after min_tokens.
    ev.text = decoder_.Push(id);
  } else {
    ev.text = stops_.Push(decoder_.Push(id));
    if (stops_.stopped()) {
      result_.finish_reason = FinishReason::kStop;
      result_.stop_string = stops_.matched();
      done_ = true;
    }
  }
  if (!done_ && result_.completion_tokens == options_.max_tokens) {
    result_.finish_reason = FinishReason::kLength;
    done_ = true;
  }
  result_.text += ev.text;
  return ev;
}

GenerateResult RequestDecoder::Finish() {
  if (!stops_.stopped()) {
    result_.trailing_text = stops_.Push(decoder_.Flush());
    if (stops_.stopped()) {
      // The flushed bytes completed a stop string.
      result_.finish_reason = FinishReason::kStop;
      result_.stop_string = stops_.matched();
    } else {
      result_.trailing_text += stops_.Flush();
    }
    result_.text += result_.trailing_text;
  }
  return std::move(result_);
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
  RETURN_IF_ERROR(ValidatePromptTokens(prompt, options.max_tokens, config));
  const int n_prompt = static_cast<int>(prompt.size());

  auto cache = model.NewCache(n_prompt + options.max_tokens);
  std::vector<float> logits;
  RETURN_IF_ERROR(model.Forward(cache.get(), prompt, /*all_logits=*/false, &logits));
  RequestDecoder request(tokenizer, options, std::move(prompt));
  while (true) {
    on_token(request.Next(logits));
    if (request.done()) break;
    const int next[1] = {request.tokens().back()};
    RETURN_IF_ERROR(model.Forward(cache.get(), absl::Span<const int>(next, 1), false, &logits));
  }
  return request.Finish();
}

}  // namespace memserve
