#include "engine/engine.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/request/validate.h"
#include "engine/status_macros.h"

namespace memserve {

struct Engine::Live {
  Live(const Tokenizer& tokenizer, EngineRequest request, std::shared_ptr<RequestObserver> observer)
      : id(std::move(request.id)),
        decoder(tokenizer, request.options, std::move(request.prompt)),
        observer(std::move(observer)) {
    timings.submitted = absl::Now();
  }
  std::string id;
  RequestDecoder decoder;
  std::shared_ptr<RequestObserver> observer;
  RequestTimings timings;
  // How the request ends if the scheduler drops it: Cancelled for a client,
  // Unavailable when a drain ran out of time, Internal after a failed step;
  // DeadlineExceeded is set when its deadline drops it.
  absl::Status end_status = absl::CancelledError("the request was cancelled");
};

namespace {

// Distinct memory rows are counted on one step in this many (counting
// downloads the selected row ids; Model::set_count_distinct_rows).
constexpr int64_t kDistinctRowsEverySteps = 16;

double Seconds(absl::Time from, absl::Time to) { return absl::ToDoubleSeconds(to - from); }

// What StepStats reports about a request that ended with `code`.
FinishedRequestStats FinishedStats(const RequestDecoder& decoder, absl::StatusCode code,
                                   const RequestTimings& timings) {
  FinishedRequestStats out;
  out.code = code;
  out.prompt_tokens = decoder.prompt_tokens();
  out.generation_tokens = decoder.completion_tokens();
  out.timings = timings;
  return out;
}

// The name of a model served from `model_dir`: the directory's base name,
// also when `model_dir` ends with a slash or is ".".
std::string ModelNameOf(const std::string& model_dir) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(model_dir, ec);
  if (ec) p = model_dir;
  p = p.lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

Engine::Engine(LoadedModel loaded, std::unique_ptr<KvCacheManager> kv_cache,
               std::unique_ptr<Scheduler> scheduler, const EngineOptions& options)
    : model_(std::move(loaded.model)),
      tokenizer_(std::move(loaded.tokenizer)),
      options_(options),
      kv_cache_(std::move(kv_cache)),
      scheduler_(std::move(scheduler)) {
  const ModelConfig& config = model_->config();
  info_.model_name =
      options.model_name.empty() ? ModelNameOf(options.model_dir) : options.model_name;
  info_.model_dir = options.model_dir;
  info_.device = DeviceName(loaded.device);
  info_.config = config;
  info_.tokenizer = tokenizer_->kind();
  info_.bos_id = tokenizer_->bos_id();
  info_.eos_id = tokenizer_->eos_id();
  if (!config.memory.layers.empty()) {
    const MemoryPool& pool = model_->memory_pool();
    info_.value_table_placement = ValueTablePlacement(loaded.device, pool.placement());
    info_.value_table_bytes = model_->value_table_bytes();
    info_.memory_placement = MemoryPlacementName(pool.placement());
    info_.memory_shards = static_cast<int>(pool.shards().size());
    info_.memory_device_bytes = pool.device_bytes();
    info_.memory_plan = pool.summary();
  }
  info_.context_length = config.max_seqlen;
  info_.kv_blocks = kv_cache_->num_blocks();
  info_.kv_block_tokens = kv_cache_->block_size();
  info_.kv_cache_bytes = model_->KvBytesPerBlock(kv_cache_->block_size()) * kv_cache_->num_blocks();
  thread_ = std::thread([this] { Loop(); });
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  SchedulerOptions sched = options.scheduler;
  if (sched.block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--block_size must be >= 1, got ", sched.block_size));
  }
  LoadOptions load;
  load.model_dir = options.model_dir;
  load.device = options.device;
  load.threads = options.threads;
  load.memory_shards = options.memory_shards;
  load.memory_placement = options.memory_placement;
  load.memory_gpus = options.memory_gpus;
  load.kv_cache_bytes = options.kv_cache_bytes;
  load.kv_cache_dtype = options.kv_cache_dtype;
  load.cpu_matmul_precision = options.cpu_matmul_precision;
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(load));
  const Model* model = loaded.model.get();
  const ModelConfig& config = model->config();
  const int blocks_per_sequence = (config.max_seqlen + sched.block_size - 1) / sched.block_size;
  if (sched.num_blocks == 0) {
    const int64_t wanted =
        static_cast<int64_t>(std::max(1, sched.max_batch_size)) * blocks_per_sequence;
    const int64_t affordable =
        std::max<int64_t>(1, options.kv_cache_bytes / model->KvBytesPerBlock(sched.block_size));
    sched.num_blocks = static_cast<int>(
        std::max<int64_t>(blocks_per_sequence, std::min<int64_t>(wanted, affordable)));
  }
  RETURN_IF_ERROR(sched.Validate());  // before allocating the storage
  PagedKvLayout layout;
  layout.block_size = sched.block_size;
  layout.num_blocks = sched.num_blocks;
  layout.kv_dim = static_cast<int64_t>(config.n_kv_heads) * config.head_dim;
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> storage, model->NewPagedCache(layout));
  auto kv_cache = std::make_unique<KvCacheManager>(std::move(storage));
  ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> scheduler, Scheduler::Create(sched, kv_cache.get()));
  return std::unique_ptr<Engine>(
      new Engine(std::move(loaded), std::move(kv_cache), std::move(scheduler), options));
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    draining_ = true;
    for (auto& [id, live] : live_) {
      live->end_status = absl::UnavailableError("the server is shutting down");
      scheduler_->Cancel(id).IgnoreError();
    }
  }
  wake_.notify_all();
  thread_.join();
}

absl::StatusOr<uint64_t> Engine::Submit(EngineRequest request,
                                        std::shared_ptr<RequestObserver> observer) {
  const ModelConfig& config = model_->config();
  RETURN_IF_ERROR(ValidateRequest(request, config));
  const int n_prompt = static_cast<int>(request.prompt.size());
  SequenceRequest seq;
  seq.prompt_tokens = n_prompt;
  seq.max_tokens = request.options.max_tokens;
  seq.deadline = request.deadline;
  auto live = std::make_unique<Live>(*tokenizer_, std::move(request), std::move(observer));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) {
      return absl::UnavailableError("the server is draining for shutdown; retry elsewhere");
    }
    seq.id = next_id_;
    RETURN_IF_ERROR(scheduler_->Enqueue(seq));
    ++next_id_;
    live_.emplace(seq.id, std::move(live));
  }
  wake_.notify_one();
  return seq.id;
}

void Engine::Cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (live_.count(id) == 0) return;
    scheduler_->Cancel(id).IgnoreError();
  }
  wake_.notify_one();
}

void Engine::Drain(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  if (!idle_.wait_until(lock, deadline, [this] { return live_.empty(); })) {
    for (auto& [id, live] : live_) {
      live->end_status = absl::UnavailableError(
          "the server shut down before the request finished (--shutdown_timeout)");
      scheduler_->Cancel(id).IgnoreError();
    }
    wake_.notify_all();
    idle_.wait(lock, [this] { return live_.empty(); });
  }
}

void Engine::SetStatsObserver(EngineStatsObserver* observer) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_observer_ = observer;
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  const SchedulerStats s = scheduler_->Stats();
  EngineStats out;
  out.running = s.running;
  out.waiting = s.waiting;
  out.kv_blocks_used = s.kv_blocks_used;
  out.kv_blocks_total = s.kv_blocks_total;
  out.kv_block_tokens = kv_cache_->block_size();
  out.requests_served = requests_served_;
  out.steps = steps_;
  out.preemptions = preemptions_;
  out.draining = draining_;
  return out;
}

void Engine::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !live_.empty(); });
      if (live_.empty()) return;  // stopping with nothing left
    }
    Step();
    if (options_.debug_step_delay > absl::ZeroDuration()) absl::SleepFor(options_.debug_step_delay);
  }
}

void Engine::FinishEarly(std::vector<std::unique_ptr<Live>> ended, StepStats* stats) {
  const absl::Time now = absl::Now();
  for (auto& live : ended) {
    live->timings.done = now;
    stats->finished.push_back(FinishedStats(live->decoder, live->end_status.code(), live->timings));
    live->observer->OnDone(live->end_status, live->timings);
  }
}

bool Engine::Step() {
  const absl::Time step_start = absl::Now();
  StepStats stats;
  EngineStatsObserver* observer = nullptr;
  StepPlan plan;
  std::vector<std::unique_ptr<Live>> dropped;
  std::vector<Live*> owners;  // per chunk
  {
    std::lock_guard<std::mutex> lock(mu_);
    observer = stats_observer_;
    model_->set_count_distinct_rows(observer != nullptr && steps_ % kDistinctRowsEverySteps == 0);
    plan = scheduler_->Schedule(absl::Now());
    preemptions_ += static_cast<int64_t>(plan.preempted.size());
    stats.preemptions = static_cast<int>(plan.preempted.size());
    for (const DroppedSequence& d : plan.dropped) {
      auto node = live_.extract(d.id);
      if (node.empty()) continue;
      if (d.reason == DropReason::kDeadlineExceeded) {
        node.mapped()->end_status =
            absl::DeadlineExceededError("the request's deadline passed before it finished");
      }
      dropped.push_back(std::move(node.mapped()));
    }
    const absl::Time now = absl::Now();
    for (StepChunk& c : plan.chunks) {
      Live* live = live_.at(c.id).get();
      if (live->timings.admitted == absl::InfinitePast()) live->timings.admitted = now;
      owners.push_back(live);
      // The decoder's tokens grow only after the forward pass (sampling).
      c.token_ids = live->decoder.tokens().data() + c.first_position;
    }
    if (live_.empty()) idle_.notify_all();
  }
  FinishEarly(std::move(dropped), &stats);
  // Publishes `stats` to the observer (the step's end).
  auto publish = [&] {
    if (observer == nullptr) return;
    stats.end = absl::Now();
    stats.step_seconds = Seconds(step_start, stats.end);
    observer->OnStep(stats);
  };
  if (plan.chunks.empty()) {
    if (!plan.dropped.empty() || !plan.preempted.empty()) publish();
    return !plan.dropped.empty();
  }

  const absl::Status forward = model_->ForwardBatch(kv_cache_->storage(), plan.chunks, &logits_);
  stats.scheduled_tokens = plan.num_tokens();
  stats.memory = model_->memory_read_stats();

  std::vector<uint64_t> stopped;
  if (forward.ok()) {
    const int64_t vocab = model_->config().vocab_size;
    size_t row = 0;
    const absl::Time now = absl::Now();
    for (size_t i = 0; i < plan.chunks.size(); ++i) {
      if (!plan.chunks[i].wants_logits) continue;
      Live* live = owners[i];
      const TokenEvent event =
          live->decoder.Next(absl::MakeConstSpan(logits_).subspan(row * vocab, vocab));
      ++row;
      RequestTimings& t = live->timings;
      if (t.first_token == absl::InfinitePast()) {
        t.first_token = now;
        stats.prompt_tokens += live->decoder.prompt_tokens();
        stats.time_to_first_token.push_back(Seconds(t.submitted, now));
      } else {
        stats.inter_token_latency.push_back(Seconds(t.last_token, now));
      }
      t.last_token = now;
      ++stats.generation_tokens;
      live->observer->OnToken(event);
      if (live->decoder.done()) stopped.push_back(plan.chunks[i].id);
    }
  }

  std::vector<std::unique_ptr<Live>> finished, failed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++steps_;
    if (!forward.ok()) {
      // A bug (the scheduler and the model disagree): end the step's requests
      // with Internal rather than the server. The next Schedule drops them.
      const absl::Status error =
          absl::InternalError(absl::StrCat("model step failed: ", forward.message()));
      for (const StepChunk& c : plan.chunks) {
        live_.at(c.id)->end_status = error;
        scheduler_->Cancel(c.id).IgnoreError();
      }
      absl::StatusOr<std::vector<uint64_t>> ended = scheduler_->OnStepDone(plan, {});
      for (uint64_t id : ended.ok() ? *ended : std::vector<uint64_t>{}) {
        auto node = live_.extract(id);
        if (!node.empty()) failed.push_back(std::move(node.mapped()));
      }
    } else {
      absl::StatusOr<std::vector<uint64_t>> ended = scheduler_->OnStepDone(plan, stopped);
      if (ended.ok()) {
        for (uint64_t id : *ended) {
          auto node = live_.extract(id);
          if (node.empty()) continue;
          finished.push_back(std::move(node.mapped()));
          ++requests_served_;
        }
      }
    }
    if (live_.empty()) idle_.notify_all();
  }
  const absl::Time now = absl::Now();
  for (auto& live : finished) {
    live->timings.done = now;
    GenerateResult result = live->decoder.Finish();
    FinishedRequestStats done = FinishedStats(live->decoder, absl::StatusCode::kOk, live->timings);
    done.finish_reason = result.finish_reason;
    stats.finished.push_back(done);
    live->observer->OnDone(std::move(result), live->timings);
  }
  FinishEarly(std::move(failed), &stats);
  publish();
  return true;
}

}  // namespace memserve
