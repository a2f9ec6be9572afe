// What memserve-bench measured and how it reports it: per-request records,
// per-token inter-token gaps, goodput, the summary (the metrics of
// `vllm bench serve`), and its console table, JSON and sweep CSV. Pure logic;
// the statistics themselves are in stats.h.
//
// Definitions (all times as the client sees them; docs/bench.md):
// - TTFT: from sending the request to the first token message.
// - ITL, per token: every generated token after the first has one gap. Token
//   messages that reach the client together (each within `merge_window_ms`
//   of the previous one: the server coalesces queued messages into one
//   write) form one delivery; the time from the previous delivery to this one
//   is split evenly over its tokens, so a delivery of k tokens counts as k
//   gaps. The gaps of a request add up to (last token - first token).
// - TPOT: (E2EL - TTFT) / (output tokens - 1), for requests with > 1 token.
// - E2EL: from sending the request to its final status.
// - Throughputs divide by the benchmark's duration (first send to last
//   completion) and count successful requests only; failed requests are
//   reported by status code with an example of the server's message.
// - Goodput: successful requests per second that met every given SLO
//   (TTFT, TPOT, E2EL <= the limit; TPOT of a 1-token request is 0).
#ifndef MEMSERVE_CLIENTS_BENCH_REPORT_H_
#define MEMSERVE_CLIENTS_BENCH_REPORT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "clients/bench/stats.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace bench {

// One request of a benchmark, seen from the client.
struct RequestRecord {
  double scheduled_s = 0;  // its arrival time in the schedule, from the start
  double sent_s = 0;       // when it was sent (later than scheduled when
                           // --max_concurrency made it wait)
  // "OK", or the gRPC status code's name. A stream that ended OK without a
  // final message is recorded as "INTERNAL".
  std::string code = "OK";
  std::string message;            // the status message of a failed request
  int input_tokens = 0;           // usage.prompt_tokens when it succeeded, else the bench's count
  int output_tokens = 0;          // token messages received
  std::optional<double> ttft_ms;  // unset without tokens
  std::vector<double> itl_ms;     // per token after the first (output_tokens - 1 values)
  double e2el_ms = 0;
  std::string finish_reason;  // "length", "eos", "stop"; empty when failed
  // When each token message arrived, in ms from the start of the benchmark
  // (for the peak output rate).
  std::vector<double> token_times_ms;

  bool ok() const { return code == "OK"; }
  // (E2EL - TTFT) / (output_tokens - 1); unset with fewer than 2 tokens.
  std::optional<double> tpot_ms() const;
};

// Per-token gaps (see the header comment) of token messages that arrived at
// `arrival_ms` (ascending). Empty for fewer than two tokens.
std::vector<double> PerTokenGaps(const std::vector<double>& arrival_ms, double merge_window_ms);

// Service-level objectives for goodput, in ms; unset = not checked.
struct Slo {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2el_ms;
  bool empty() const { return !ttft_ms && !tpot_ms && !e2el_ms; }
};

// Parses --goodput: "KEY:MS" pairs separated by spaces or commas, KEY one of
// ttft, tpot, e2el (each at most once), MS > 0. "" = no SLO.
// INVALID_ARGUMENT naming --goodput and the offending pair.
absl::StatusOr<Slo> ParseGoodput(absl::string_view value);

// Parses --percentiles: comma-separated numbers in (0, 100], no duplicates,
// at least one. INVALID_ARGUMENT naming --percentiles and the value.
absl::StatusOr<std::vector<double>> ParsePercentiles(absl::string_view value);

// Whether a successful request met every SLO of `slo`.
bool MeetsSlo(const RequestRecord& record, const Slo& slo);

struct ErrorCount {
  int64_t count = 0;
  std::string example;  // the message of the first such request
};

struct Summary {
  double duration_s = 0;
  int64_t completed = 0;  // successful requests
  int64_t failed = 0;
  int64_t total_input_tokens = 0;         // of successful requests
  int64_t total_output_tokens = 0;        // of successful requests
  int64_t failed_output_tokens = 0;       // received by failed requests before they failed
  double request_throughput = 0;          // completed / duration
  std::optional<double> request_goodput;  // with an SLO
  int64_t good_requests = 0;
  double output_throughput = 0;                    // total_output_tokens / duration
  double total_token_throughput = 0;               // (input + output) / duration
  double max_output_tokens_per_s = 0;              // most tokens received in one 1-s bucket
  int max_concurrent_requests = 0;                 // most requests in flight at once
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;  // of successful requests
  std::map<std::string, ErrorCount> errors;        // status code name -> failed requests
};

// REQUIRES: duration_s > 0 (else the rates are 0).
Summary MakeSummary(const std::vector<RequestRecord>& records, double duration_s,
                    const std::vector<double>& percentiles, const Slo& slo);

// The summary as JSON: the counts and rates above, "ttft_ms" {"mean",
// "median", "std", "p99", ...} (null without values) and the other
// distributions alike, "errors" {code: {"count", "example"}}.
nlohmann::json SummaryToJson(const Summary& summary);

// The per-request arrays: "scheduled_s", "sent_s", "input_lens",
// "output_lens", "ttfts_ms", "tpots_ms", "itls_ms" (a list per request),
// "e2els_ms", "status", "messages", "finish_reasons"; null where a value is
// missing.
nlohmann::json RecordsToJson(const std::vector<RequestRecord>& records);

// The console table, `title` on its first line.
std::string FormatTable(const Summary& summary, absl::string_view title);

// One sweep level as a CSV row and the matching header: the swept parameter
// and its value, counts, throughputs, goodput, and mean / median / each
// percentile of TTFT, TPOT, ITL and E2EL.
std::string CsvHeader(const std::vector<double>& percentiles);
std::string CsvRow(absl::string_view parameter, absl::string_view value, const Summary& summary);

}  // namespace bench
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_BENCH_REPORT_H_
