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
  // Token messages received (the completion tokens of this request, also of
  // a failed one: they were generated).
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
// between the two nearest ranks. REQUIRES: `values` sorted ascending, not
// empty.
double Percentile(const std::vector<double>& sorted_values, double p);

// p50, p90 and p99 of `values` (any order).
Percentiles Summarize(std::vector<double> values);

// The result of a measured phase.
struct Report {
  int streams = 0;
  int64_t requests = 0;  // measured requests, failed ones included
  int64_t ok = 0;
  int64_t completion_tokens = 0;
  double wall_s = 0;
  double tokens_per_s = 0;    // completion_tokens / wall_s
  double requests_per_s = 0;  // requests / wall_s
  Percentiles ttft_ms;
  Percentiles itl_ms;
  Percentiles latency_ms;
  std::map<std::string, int64_t> errors;  // status code name -> count; no "OK"
};

// REQUIRES: wall_s > 0 (else the rates are 0).
Report MakeReport(const std::vector<RequestRecord>& records, int streams, double wall_s);

// {streams, requests, ok, completion_tokens, wall_s, tokens_per_s,
//  requests_per_s, ttft_ms {p50, p90, p99, count}, itl_ms {...},
//  latency_ms {...}, errors {code: count}}; percentiles are null when there
// were no values.
nlohmann::json ReportToJson(const Report& report);

// A few aligned lines for people.
std::string FormatReport(const Report& report);

// Prompts from JSON lines, each an object with a string "prompt" (other keys
// are ignored; blank lines skipped). INVALID_ARGUMENT names the line (from 1)
// that is not such an object, or says the file holds no prompt.
absl::StatusOr<std::vector<std::string>> ParsePromptsJsonl(absl::string_view content);

}  // namespace loadgen
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_LOADGEN_LOADGEN_LIB_H_
