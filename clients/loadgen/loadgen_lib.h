// The measuring and reporting half of memserve-loadgen, free of gRPC calls:
// per-request records, percentiles, the summary (text and JSON) and the
// prompts file.
#ifndef MEMSERVE_CLIENTS_LOADGEN_LOADGEN_LIB_H_
#define MEMSERVE_CLIENTS_LOADGEN_LOADGEN_LIB_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace loadgen {

// What one streaming Generate call did, seen from the client.
struct RequestRecord {
  // "OK", or the gRPC status code's name ("UNAVAILABLE", ...). A stream that
  // ended OK without a final message counts as "INTERNAL".
  std::string code = "OK";
  // The status message of a failed call (the server's words).
  std::string message;
  // Token messages received (also by a failed call).
  int64_t completion_tokens = 0;
  // From the call's start to the first token message; unset without tokens.
  std::optional<double> ttft_ms;
  // Between consecutive token messages (completion_tokens - 1 values).
  std::vector<double> itl_ms;
  // From the call's start to its end (status received).
  double latency_ms = 0;
};

struct Percentiles {
  size_t count = 0;  // values summarized; 0 = none (the percentiles are 0)
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
};

// The p-th percentile (p in [0, 100]) of `values`, interpolating linearly
// between the two nearest ranks: bench::Percentile (clients/bench/stats.h,
// where memserve's clients compute it). REQUIRES: `values` sorted ascending,
// not empty.
double Percentile(const std::vector<double>& sorted_values, double p);

// p50, p90 and p99 of `values` (any order).
Percentiles Summarize(std::vector<double> values);

// Failed calls with one status code.
struct ErrorCount {
  int64_t count = 0;
  std::string example;  // the message of the first such call
};

// The result of a measured phase. Rates and latencies describe the calls that
// succeeded only: a failed call is counted in `errors`, never as throughput.
struct Report {
  int streams = 0;
  int64_t requests = 0;  // measured requests, failed ones included
  int64_t ok = 0;
  int64_t completion_tokens = 0;         // received by the calls that succeeded
  int64_t failed_completion_tokens = 0;  // received by failed calls before they failed
  double wall_s = 0;
  double tokens_per_s = 0;    // completion_tokens / wall_s
  double requests_per_s = 0;  // ok / wall_s
  Percentiles ttft_ms;        // of the calls that succeeded
  Percentiles itl_ms;
  Percentiles latency_ms;
  std::map<std::string, ErrorCount> errors;  // status code name -> failed calls; no "OK"
};

// REQUIRES: wall_s > 0 (else the rates are 0).
Report MakeReport(const std::vector<RequestRecord>& records, int streams, double wall_s);

// {streams, requests, ok, failed, completion_tokens, failed_completion_tokens,
//  wall_s, tokens_per_s, requests_per_s, ttft_ms {p50, p90, p99, count},
//  itl_ms {...}, latency_ms {...}, errors {code: {count, example}}};
// percentiles are null when there were no values.
nlohmann::json ReportToJson(const Report& report);

// A few aligned lines for people.
std::string FormatReport(const Report& report);

// max_tokens for every call: `flag` when set, else kLoadgenMaxTokens or less,
// so that the longest prompt plus max_tokens fits the model's context
// (`max_seqlen`). INVALID_ARGUMENT naming the flag and the limit when the set
// value does not fit, or when the prompt leaves no room.
// (A load test wants many short calls; the server itself defaults to
// kDefaultMaxTokens, engine/generate.h.)
inline constexpr int kLoadgenMaxTokens = 128;
absl::StatusOr<int> PickMaxTokens(std::optional<int> flag, int longest_prompt_tokens,
                                  int max_seqlen);

// Prompts from JSON lines, each an object with a string "prompt" (other keys
// are ignored; blank lines skipped). INVALID_ARGUMENT names the line (from 1)
// that is not such an object, or says the file holds no prompt.
absl::StatusOr<std::vector<std::string>> ParsePromptsJsonl(absl::string_view content);

}  // namespace loadgen
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_LOADGEN_LOADGEN_LIB_H_
