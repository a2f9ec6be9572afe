#include "server/metrics/serving_metrics.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace memserve {
namespace metrics {
namespace {

double Seconds(absl::Time from, absl::Time to) { return absl::ToDoubleSeconds(to - from); }

bool IsSet(absl::Time t) { return t != absl::InfinitePast(); }

}  // namespace

const std::vector<double> kTimeToFirstTokenBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kInterTokenLatencyBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                                       0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                                       7.5,  10.0,  20.0, 40.0,  80.0};
const std::vector<double> kRequestLatencyBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const std::vector<double> kIterationTokenBuckets = {1,   8,    16,   32,   64,   128,  256,
                                                    512, 1024, 2048, 4096, 8192, 16384};

// memserve's own: per-step memory lookup time, and the distinct-row fraction.
const std::vector<double> kMemoryLookupBuckets = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005,   0.01,     0.025,   0.05,   0.1,     0.25,   0.5,   1.0};
const std::vector<double> kFractionBuckets = {0.05, 0.1, 0.2, 0.3, 0.4,  0.5,
                                              0.6,  0.7, 0.8, 0.9, 0.95, 1.0};

std::vector<double> Buckets125(double max) {
  std::vector<double> out;
  for (double scale = 1;; scale *= 10) {
    for (const double m : {1.0, 2.0, 5.0}) {
      if (m * scale > max) return out;
      out.push_back(m * scale);
    }
  }
}

const char* VllmFinishedReason(FinishReason reason) {
  return reason == FinishReason::kLength ? "length" : "stop";
}

ServingMetrics::ServingMetrics(Registry* registry, const Engine& engine)
    : registry_(registry), engine_(engine), labels_{{"model_name", engine.Info().model_name}} {}

absl::StatusOr<std::unique_ptr<ServingMetrics>> ServingMetrics::Create(Registry* registry,
                                                                       const Engine& engine) {
  std::unique_ptr<ServingMetrics> m(new ServingMetrics(registry, engine));
  RETURN_IF_ERROR(m->Register());
  return m;
}

absl::Status ServingMetrics::Register() {
  Registry& r = *registry_;
  const Labels& l = labels_;
  const int max_len = std::max(1, engine_.Info().context_length);

  ASSIGN_OR_RETURN(running_, r.AddGauge("memserve:num_requests_running",
                                        "Number of requests in model execution batches.", l));
  ASSIGN_OR_RETURN(waiting_, r.AddGauge("memserve:num_requests_waiting",
                                        "Number of requests waiting to be processed.", l));
  ASSIGN_OR_RETURN(kv_usage_, r.AddGauge("memserve:kv_cache_usage_perc",
                                         "KV-cache usage. 1 means 100 percent usage.", l));

  ASSIGN_OR_RETURN(prompt_tokens_,
                   r.AddCounter("memserve:prompt_tokens_total",
                                "Number of prefill tokens processed (each request's prompt "
                                "once, when its first token is produced).",
                                l));
  ASSIGN_OR_RETURN(generation_tokens_, r.AddCounter("memserve:generation_tokens_total",
                                                    "Number of generation tokens processed.", l));
  ASSIGN_OR_RETURN(preemptions_,
                   r.AddCounter("memserve:num_preemptions_total",
                                "Cumulative number of preemption from the engine.", l));
  const char* success_help = "Count of successfully processed requests.";
  Labels stop = l, length = l;
  stop.emplace_back("finished_reason", "stop");
  length.emplace_back("finished_reason", "length");
  ASSIGN_OR_RETURN(success_stop_,
                   r.AddCounter("memserve:request_success_total", success_help, stop));
  ASSIGN_OR_RETURN(success_length_,
                   r.AddCounter("memserve:request_success_total", success_help, length));

  ASSIGN_OR_RETURN(ttft_, r.AddHistogram("memserve:time_to_first_token_seconds",
                                         "Histogram of time to first token in seconds.", l,
                                         kTimeToFirstTokenBuckets));
  ASSIGN_OR_RETURN(itl_, r.AddHistogram("memserve:inter_token_latency_seconds",
                                        "Histogram of inter-token latency in seconds.", l,
                                        kInterTokenLatencyBuckets));
  ASSIGN_OR_RETURN(tpot_, r.AddHistogram("memserve:request_time_per_output_token_seconds",
                                         "Histogram of time_per_output_token_seconds per request.",
                                         l, kInterTokenLatencyBuckets));
  ASSIGN_OR_RETURN(e2e_, r.AddHistogram("memserve:e2e_request_latency_seconds",
                                        "Histogram of e2e request latency in seconds.", l,
                                        kRequestLatencyBuckets));
  ASSIGN_OR_RETURN(queue_, r.AddHistogram("memserve:request_queue_time_seconds",
                                          "Histogram of time spent in WAITING phase for request.",
                                          l, kRequestLatencyBuckets));
  ASSIGN_OR_RETURN(inference_,
                   r.AddHistogram("memserve:request_inference_time_seconds",
                                  "Histogram of time spent in RUNNING phase for request.", l,
                                  kRequestLatencyBuckets));
  ASSIGN_OR_RETURN(prefill_, r.AddHistogram("memserve:request_prefill_time_seconds",
                                            "Histogram of time spent in PREFILL phase for request.",
                                            l, kRequestLatencyBuckets));
  ASSIGN_OR_RETURN(decode_, r.AddHistogram("memserve:request_decode_time_seconds",
                                           "Histogram of time spent in DECODE phase for request.",
                                           l, kRequestLatencyBuckets));
  ASSIGN_OR_RETURN(prompt_tokens_per_request_,
                   r.AddHistogram("memserve:request_prompt_tokens",
                                  "Number of prefill tokens processed.", l, Buckets125(max_len)));
  ASSIGN_OR_RETURN(
      generation_tokens_per_request_,
      r.AddHistogram("memserve:request_generation_tokens", "Number of generation tokens processed.",
                     l, Buckets125(max_len)));
  ASSIGN_OR_RETURN(
      iteration_tokens_,
      r.AddHistogram("memserve:iteration_tokens_total",
                     "Histogram of number of tokens per engine_step.", l, kIterationTokenBuckets));

  ASSIGN_OR_RETURN(memory_lookup_,
                   r.AddHistogram("memserve:memory_lookup_seconds",
                                  "Time of the memory layers' lookups (select + value gather) "
                                  "per engine step, in seconds.",
                                  l, kMemoryLookupBuckets));
  ASSIGN_OR_RETURN(memory_rows_read_,
                   r.AddCounter("memserve:memory_rows_read_total",
                                "Memory value rows gathered (tokens x heads x knn per memory "
                                "layer); rate() is rows read per second.",
                                l));
  ASSIGN_OR_RETURN(memory_rows_sampled_,
                   r.AddCounter("memserve:memory_rows_sampled_total",
                                "Memory value rows whose ids were checked for distinctness (a "
                                "sample of the steps).",
                                l));
  ASSIGN_OR_RETURN(memory_distinct_rows_,
                   r.AddCounter("memserve:memory_distinct_rows_total",
                                "Distinct row ids among the sampled rows, per memory layer and "
                                "pass.",
                                l));
  ASSIGN_OR_RETURN(memory_distinct_fraction_,
                   r.AddHistogram("memserve:memory_distinct_row_fraction",
                                  "Per sampled step: distinct rows / rows read (1 = no row read "
                                  "twice).",
                                  l, kFractionBuckets));

  // The value tables' bytes per device and placement, fixed at load.
  const EngineInfo& info = engine_.Info();
  if (info.value_table_bytes > 0) {
    std::map<std::string, double> per_device;
    for (const DeviceBytes& d : info.memory_device_bytes) {
      per_device[d.device] += static_cast<double>(d.bytes);
    }
    for (const auto& [device, bytes] : per_device) {
      Labels pool_labels = l;
      pool_labels.emplace_back("device", device);
      pool_labels.emplace_back("placement", info.value_table_placement);
      ASSIGN_OR_RETURN(
          Gauge * g,
          r.AddGauge("memserve:memory_pool_bytes",
                     "Bytes of the memory value tables, per device and placement.", pool_labels));
      g->Set(bytes);
    }
  }

  r.AddCollectHook([this] {
    const EngineStats s = engine_.Stats();
    running_->Set(s.running);
    waiting_->Set(s.waiting);
    kv_usage_->Set(s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total
                                         : 0.0);
  });
  return absl::OkStatus();
}

void ServingMetrics::OnStep(const StepStats& stats) {
  prompt_tokens_->Increment(static_cast<double>(stats.prompt_tokens));
  generation_tokens_->Increment(static_cast<double>(stats.generation_tokens));
  preemptions_->Increment(stats.preemptions);
  if (stats.scheduled_tokens > 0) iteration_tokens_->Observe(stats.scheduled_tokens);
  for (const double t : stats.time_to_first_token) ttft_->Observe(t);
  for (const double t : stats.inter_token_latency) itl_->Observe(t);

  for (const FinishedRequestStats& f : stats.finished) {
    if (f.code != absl::StatusCode::kOk) continue;  // counted by code in requests_total
    (f.finish_reason == FinishReason::kLength ? success_length_ : success_stop_)->Increment();
    const RequestTimings& t = f.timings;
    e2e_->Observe(Seconds(t.submitted, t.done));
    prompt_tokens_per_request_->Observe(f.prompt_tokens);
    generation_tokens_per_request_->Observe(f.generation_tokens);
    if (IsSet(t.admitted)) {
      queue_->Observe(Seconds(t.submitted, t.admitted));
      inference_->Observe(Seconds(t.admitted, t.done));
    }
    if (IsSet(t.admitted) && IsSet(t.first_token)) {
      prefill_->Observe(Seconds(t.admitted, t.first_token));
    }
    if (IsSet(t.first_token) && IsSet(t.last_token)) {
      decode_->Observe(Seconds(t.first_token, t.last_token));
      if (f.generation_tokens > 1) {
        tpot_->Observe(Seconds(t.first_token, t.last_token) / (f.generation_tokens - 1));
      }
    }
  }

  if (stats.memory.rows_read > 0) {
    memory_lookup_->Observe(stats.memory.seconds);
    memory_rows_read_->Increment(static_cast<double>(stats.memory.rows_read));
  }
  if (stats.memory.rows_sampled > 0) {
    memory_rows_sampled_->Increment(static_cast<double>(stats.memory.rows_sampled));
    memory_distinct_rows_->Increment(static_cast<double>(stats.memory.distinct_rows));
    memory_distinct_fraction_->Observe(static_cast<double>(stats.memory.distinct_rows) /
                                       static_cast<double>(stats.memory.rows_sampled));
  }
}

void ServingMetrics::RecordRequest(absl::string_view method, absl::StatusCode code) {
  const std::string code_name = absl::StatusCodeToString(code);
  const std::string key = absl::StrCat(method, "/", code_name);
  Counter* counter = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = requests_.find(key);
    if (it != requests_.end()) {
      counter = it->second;
    } else {
      Labels labels = labels_;
      labels.emplace_back("method", std::string(method));
      labels.emplace_back("code", code_name);
      absl::StatusOr<Counter*> c = registry_->AddCounter(
          "memserve:requests_total", "API requests by method and final status code.", labels);
      if (!c.ok()) return;  // cannot happen: the labels are fixed
      counter = *c;
      requests_.emplace(key, counter);
    }
  }
  counter->Increment();
}

}  // namespace metrics
}  // namespace memserve
