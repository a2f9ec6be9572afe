// The measuring half of memserve-bench: sends prepared requests to a server on
// an arrival schedule, as streaming Generate calls, and records what each did.
//
// Concurrency model: gRPC's callback API. One dispatcher thread (the caller's)
// sleeps until each request's arrival time, waits for a slot when
// max_concurrency is set, and starts the call; gRPC's own few threads run the
// callbacks, where each token message is timestamped (steady clock) before
// anything else is done with it. No thread per request, so a thousand
// requests in flight cost a thousand small objects, not a thousand threads
// competing for the client's cores (docs/bench.md, "How it measures").
#ifndef MEMSERVE_CLIENTS_BENCH_RUNNER_H_
#define MEMSERVE_CLIENTS_BENCH_RUNNER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "clients/bench/datasets.h"
#include "clients/bench/report.h"
#include "memserve/v1/memserve.grpc.pb.h"

namespace memserve {
namespace bench {

struct RunOptions {
  // Request i is sent at arrival_s[i] (seconds from the start), or later when
  // max_concurrency requests are in flight (then in order, as soon as one
  // ends: vLLM's semaphore). REQUIRES: arrival_s.size() == requests.size().
  std::vector<BenchRequest> requests;
  std::vector<double> arrival_s;
  std::optional<int> max_concurrency;
  // Stop sending new requests this long after the start; 0 = no limit.
  // Requests in flight then still finish and count.
  absl::Duration duration = absl::ZeroDuration();
  // Sampling of every request (max_tokens is set per request).
  v1::SamplingParams sampling;
  // Deadline of each call; InfiniteDuration() or 0 = none.
  absl::Duration timeout = absl::InfiniteDuration();
  // PerTokenGaps's merge window (report.h).
  double itl_merge_ms = 0;
  // Request ids are id_prefix + index.
  std::string id_prefix;
};

struct RunResult {
  std::vector<RequestRecord> records;  // the requests sent, in index order
  double duration_s = 0;               // first send to last completion
};

// Runs the requests against `stub` and returns their records. Never fails:
// errors of calls are recorded in them. Thread-compatible: one Run at a time
// per RunOptions; the stub may be shared.
RunResult Run(v1::MemServe::Stub& stub, const RunOptions& options);

}  // namespace bench
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_BENCH_RUNNER_H_
