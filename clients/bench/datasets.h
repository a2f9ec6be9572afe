// The prompts of memserve-bench: reading the dataset formats, drawing the
// benchmark's requests from them and fitting them to the model's context.
// Pure logic: token counts come from a caller-supplied function (the bench
// asks the server's Tokenize), so everything here is testable without a
// server.
//
// Formats (docs/bench.md):
// - jsonl: one JSON object per line with a string "prompt", optionally an
//   integer "output_tokens" (the expected output length) or a string "answer"
//   (a reference output; its token count is the expected length).
// - sharegpt: a JSON array of {"conversations": [{"from": ..., "value": ...}]}
//   (the ShareGPT dump that vLLM and others benchmark with): the first turn
//   from "human"/"user" is the prompt, the turn after it the reference output.
// - demo: the demo model's facts file (models/demo/facts.jsonl, written by
//   tools/demo_facts.py): {"prompt", "answer", ...} per line; the expected
//   output is the answer plus the EOS that ends it in training.
// - random: token ids drawn uniformly from the vocabulary (BOS first), with
//   input and output lengths drawn around the requested ones.
#ifndef MEMSERVE_CLIENTS_BENCH_DATASETS_H_
#define MEMSERVE_CLIENTS_BENCH_DATASETS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memserve {
namespace bench {

// One prompt of a dataset, before it is fitted to a model. Exactly one of
// `prompt` and `prompt_ids` is used: `prompt_ids` when not empty.
struct DatasetEntry {
  std::string prompt;
  std::vector<int32_t> prompt_ids;  // sent as token ids, exactly (no BOS added)
  // The expected output length, if the dataset says it in tokens.
  std::optional<int> output_tokens;
  // Else a reference output whose token count, plus `extra_output_tokens`, is
  // the expected length.
  std::optional<std::string> reference_output;
  int extra_output_tokens = 0;
};

// INVALID_ARGUMENT naming the line (from 1) or the element (from 0) and what
// is wrong, or saying that the content holds no usable entry.
absl::StatusOr<std::vector<DatasetEntry>> ParseJsonlDataset(absl::string_view content);
absl::StatusOr<std::vector<DatasetEntry>> ParseShareGptDataset(absl::string_view content);
absl::StatusOr<std::vector<DatasetEntry>> ParseDemoFacts(absl::string_view content);

struct RandomDatasetOptions {
  int64_t count = 0;
  int input_len = 0;   // prompt tokens, BOS included
  int output_len = 0;  // expected output tokens
  // Lengths are drawn uniformly from [len * (1 - ratio), len * (1 + ratio)]
  // (at least 1), as vLLM's random dataset. In [0, 1).
  double range_ratio = 0;
  uint64_t seed = 0;
  // Ids are drawn from [0, vocab_size) without bos_id and eos_id; BOS first.
  int vocab_size = 0;
  int bos_id = -1;
  int eos_id = -1;
};

// REQUIRES: count >= 0, input_len >= 1, output_len >= 1, vocab_size > 2.
std::vector<DatasetEntry> MakeRandomDataset(const RandomDatasetOptions& options);

// A request of the benchmark, fitted to the model.
struct BenchRequest {
  std::string prompt;               // used when prompt_ids is empty
  std::vector<int32_t> prompt_ids;  // else these, exactly
  int prompt_tokens = 0;            // as the model counts them (BOS included)
  // SamplingParams.max_tokens; unset = the server's default.
  std::optional<int> max_tokens;
};

struct PrepareOptions {
  int64_t num_prompts = 0;
  uint64_t seed = 0;
  // Overrides every entry's expected output length.
  std::optional<int> output_len;
  // The model's context (ModelInfo.max_seqlen).
  int max_seqlen = 0;
};

// What PrepareRequests left out or changed.
struct PrepareReport {
  int64_t skipped = 0;  // prompts of max_seqlen tokens or more: no room to generate
  int64_t clipped = 0;  // max_tokens lowered to fit the context
};

// Token count of `text` with the model's tokenizer, BOS first when `add_bos`.
using TokenCounter = std::function<absl::StatusOr<int>(const std::string& text, bool add_bos)>;

// `num_prompts` requests drawn from `entries` in an order shuffled with
// `seed` (cycling through them again, reshuffled, when there are fewer
// entries than prompts). A prompt that leaves no room in the context is
// skipped; a max_tokens that does not fit is clipped to the room left.
// INVALID_ARGUMENT when no entry fits (naming max_seqlen); a counter's error
// as it is. REQUIRES: entries not empty, num_prompts >= 1.
absl::StatusOr<std::vector<BenchRequest>> PrepareRequests(const std::vector<DatasetEntry>& entries,
                                                          const PrepareOptions& options,
                                                          const TokenCounter& count_tokens,
                                                          PrepareReport* report);

}  // namespace bench
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_BENCH_DATASETS_H_
