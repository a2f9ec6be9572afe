// The series memserve serves on /metrics (docs/metrics.md lists each with
// its vLLM equivalent): vLLM's names with the `memserve:` prefix and a
// model_name label, so dashboards, autoscalers and the Gateway API inference
// extension map them one to one, plus the memory layer's own series.
//
// Three sources feed them, each through one door:
//   - the engine's step hook: ServingMetrics is the EngineStatsObserver the
//     server registers (Engine::SetStatsObserver); tokens, latencies,
//     finished requests, preemptions, memory reads;
//   - the API layer: RecordRequest once per generation call, with its final
//     status (also the calls refused before reaching the engine);
//   - at each scrape, Engine::Stats() for the gauges (running, waiting, KV
//     usage), so they are current whether or not a step ran.
// Thread-safety: OnStep runs on the engine thread, RecordRequest on any
// thread, scrapes on the HTTP server's threads; all safe.
#ifndef MEMSERVE_SERVER_METRICS_SERVING_METRICS_H_
#define MEMSERVE_SERVER_METRICS_SERVING_METRICS_H_

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "engine/engine.h"
#include "server/metrics/registry.h"

namespace memserve {
namespace metrics {

// vLLM's buckets (vllm/v1/metrics/loggers.py), in seconds.
extern const std::vector<double> kTimeToFirstTokenBuckets;
extern const std::vector<double> kInterTokenLatencyBuckets;  // also time per output token
extern const std::vector<double> kRequestLatencyBuckets;     // e2e, queue, prefill, decode
extern const std::vector<double> kIterationTokenBuckets;
// 1, 2, 5, 10, 20, 50, ... up to `max` (vLLM's build_1_2_5_buckets).
std::vector<double> Buckets125(double max);

// vLLM's finished_reason of a request that ended OK: "stop" (EOS, a stop
// string or stop token) or "length".
const char* VllmFinishedReason(FinishReason reason);

class ServingMetrics : public EngineStatsObserver {
 public:
  // Registers every series in `registry` (labelled model_name =
  // engine.Info().model_name) and sets the ones fixed at load (memory pool
  // bytes). Errors: those of Registry (a series registered twice with another
  // shape). REQUIRES: `registry` and `engine` outlive the returned object,
  // which the caller registers with engine.SetStatsObserver.
  static absl::StatusOr<std::unique_ptr<ServingMetrics>> Create(Registry* registry,
                                                                const Engine& engine);

  void OnStep(const StepStats& stats) override;

  // A generation call (`method`: Generate, Complete, Chat, ChatComplete, or an
  // HTTP route) ended with `code`: memserve:requests_total{method, code}.
  void RecordRequest(absl::string_view method, absl::StatusCode code);

 private:
  ServingMetrics(Registry* registry, const Engine& engine);
  absl::Status Register();

  Registry* const registry_;
  const Engine& engine_;
  const Labels labels_;  // {model_name}

  // Set at scrape time from Engine::Stats().
  Gauge* running_ = nullptr;
  Gauge* waiting_ = nullptr;
  Gauge* kv_usage_ = nullptr;
  // Counters.
  Counter* prompt_tokens_ = nullptr;
  Counter* generation_tokens_ = nullptr;
  Counter* preemptions_ = nullptr;
  Counter* success_stop_ = nullptr;
  Counter* success_length_ = nullptr;
  // Histograms.
  Histogram* ttft_ = nullptr;
  Histogram* itl_ = nullptr;
  Histogram* tpot_ = nullptr;
  Histogram* e2e_ = nullptr;
  Histogram* queue_ = nullptr;
  Histogram* inference_ = nullptr;
  Histogram* prefill_ = nullptr;
  Histogram* decode_ = nullptr;
  Histogram* prompt_tokens_per_request_ = nullptr;
  Histogram* generation_tokens_per_request_ = nullptr;
  Histogram* iteration_tokens_ = nullptr;
  // The memory layer.
  Histogram* memory_lookup_ = nullptr;
  Counter* memory_rows_read_ = nullptr;
  Counter* memory_rows_sampled_ = nullptr;
  Counter* memory_distinct_rows_ = nullptr;
  Histogram* memory_distinct_fraction_ = nullptr;

  absl::Mutex mu_;  // guards the lookup below (the counters are thread-safe)
  // memserve:requests_total by (method, code), created on first use.
  absl::flat_hash_map<std::string, Counter*> requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace metrics
}  // namespace memserve

#endif  // MEMSERVE_SERVER_METRICS_SERVING_METRICS_H_
