// The JSONL output of one generation, shared by `memserve generate --output
// jsonl` and `memserve-cli generate|chat --output jsonl`, so the same request
// prints the same lines from either program (docs/api.md, "Command-line
// output"):
//
//   one line per generated token, in order:
//     {"id": 68, "logprob": -0.02, "text": "D",
//      "top": [{"id": 68, "logprob": -0.02, "text": "D"}, ...]}
//   then one final line:
//     {"finish_reason": "length"|"eos"|"stop", "text": TRAILING_TEXT,
//      "usage": {"completion_tokens": N, "prompt_tokens": N}
//      [, "stop_string": S | "stop_token_id": ID]}
//
// Concatenating every line's "text" gives the whole output. Keys are sorted;
// "top" is empty without logprobs. Bytes that are not valid UTF-8 (a top
// alternative that is part of a character) print as U+FFFD.
//
// The inputs are plain structs: each program converts its own types (engine
// events, gRPC messages) into them.
#ifndef MEMSERVE_CLIENTS_COMMON_GENERATION_JSONL_H_
#define MEMSERVE_CLIENTS_COMMON_GENERATION_JSONL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace memserve {
namespace jsonl {

// The finish reasons of the final line.
inline constexpr char kFinishLength[] = "length";
inline constexpr char kFinishEos[] = "eos";
inline constexpr char kFinishStop[] = "stop";

// One of the most likely tokens at a position.
struct TopEntry {
  int32_t id = 0;
  float logprob = 0;
  std::string text;  // the token's exact bytes ("" for control tokens)
};

// One generated token.
struct TokenLine {
  int32_t id = 0;
  std::string text;  // the text this token released (may be empty)
  float logprob = 0;
  std::vector<TopEntry> top;  // most likely first; empty without logprobs
};

// The end of a generation.
struct FinalLine {
  std::string finish_reason;  // kFinishLength, kFinishEos or kFinishStop
  std::string text;           // text released only at the end (the held-back tail)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::optional<std::string> stop_string;  // with "stop": the stop string that matched
  std::optional<int32_t> stop_token_id;    // with "stop": the stop token sampled
};

// The line for a token / the final line, without the newline.
std::string FormatToken(const TokenLine& token);
std::string FormatFinal(const FinalLine& final_line);

}  // namespace jsonl
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_COMMON_GENERATION_JSONL_H_
