// Engine: the batched generation loop. One engine thread owns the model, the
// paged KV cache (a KvCacheManager: blocks, block tables, storage) and the
// scheduler; any thread submits, cancels and reads stats. Each step the scheduler picks the running
// decodes plus admitted prompt chunks (engine/scheduler.h), the model runs them as one batch
// (Model::ForwardBatch), and each sequence samples its next token with its
// own RNG (RequestDecoder), so a request's tokens do not depend on what else
// is in the batch.
//
//   EngineOptions options;
//   options.model_dir = "models/demo";
//   auto engine = Engine::Create(options);   // loads and assembles everything
//   auto id = (*engine)->Submit(std::move(request), observer);   // any thread
//   (*engine)->Cancel(*id);                                      // any thread
//   (*engine)->Drain(absl::Seconds(30));                         // shutdown
#ifndef MEMSERVE_ENGINE_ENGINE_H_
#define MEMSERVE_ENGINE_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/backend_factory.h"
#include "engine/generate.h"
#include "engine/kv_cache.h"
#include "engine/load_model.h"
#include "engine/model.h"
#include "engine/request/request.h"
#include "engine/scheduler.h"
#include "engine/tokenizer.h"

namespace memserve {

struct EngineOptions {
  // What to load and where (LoadModel, engine/load_model.h).
  std::string model_dir;
  Device device = Device::kCpu;
  int threads = 0;        // CPU threads for the ops; 0 = one per hardware thread
  int memory_shards = 1;  // column shards of the memory value tables (--memory_shards)
  // Where the value tables go (--memory_placement, --memory_gpus; 0 = all
  // GPUs): LoadOptions; the plan keeps kv_cache_bytes free on GPU 0.
  MemoryPlacement memory_placement = MemoryPlacement::kAuto;
  int memory_gpus = 0;
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kAuto;                     // --kv_cache_dtype
  CpuMatMulPrecision cpu_matmul_precision = CpuMatMulPrecision::kExact;  // --cpu_matmul_precision
  // The model's name in Info() (GetModelInfo); empty = the base name of
  // model_dir.
  std::string model_name;
  // num_blocks 0 = enough blocks for max_batch_size sequences of the whole
  // context, capped at kv_cache_bytes.
  SchedulerOptions scheduler;
  int64_t kv_cache_bytes = int64_t{4} << 30;  // cap of the automatic pool size
  // Testing aid: sleep this long after every step, so that tests can hold
  // requests in flight on a tiny model. 0 in production.
  absl::Duration debug_step_delay = absl::ZeroDuration();
};

struct RequestTimings {
  absl::Time submitted;
  absl::Time admitted = absl::InfinitePast();     // first scheduled
  absl::Time first_token = absl::InfinitePast();  // first token produced
  absl::Time last_token = absl::InfinitePast();   // latest token produced
  absl::Time done = absl::InfinitePast();
};

// Receives one request's output. Called on the engine thread, in order, never
// concurrently for one request; implementations must not block (queue the
// data and return) and must not call back into the Engine except Stats().
class RequestObserver {
 public:
  virtual ~RequestObserver() = default;
  virtual void OnToken(const TokenEvent& event) = 0;
  // Called exactly once, last. OK with the result, or why the request ended
  // early: Cancelled (Cancel), DeadlineExceeded (its deadline passed while
  // queued or running), Unavailable (the drain timeout ended), Internal.
  virtual void OnDone(absl::StatusOr<GenerateResult> result, const RequestTimings& timings) = 0;
};

// What the engine serves and how (GetModelInfo, the server's log). Fixed
// after Create.
struct EngineInfo {
  std::string model_name;
  std::string model_dir;
  std::string device;     // "cpu" or "cuda" (DeviceName)
  ModelConfig config;     // shape, memory layers, tokenizer setting, context length
  std::string tokenizer;  // Tokenizer::kind(): "bytes" or "sp"
  int bos_id = -1;
  int eos_id = -1;
  // Memory value table(s): where they live (ModelInfo.memory.placement,
  // e.g. "cpu-mmap") and their bytes as stored; "" and 0 for a dense model.
  std::string value_table_placement;
  int64_t value_table_bytes = 0;
  // The resolved --memory_placement ("host", "device" or "sharded"), the
  // column shards gathered per lookup, the tables' bytes per device, and the
  // plan's one-line summary ("" for a dense model).
  std::string memory_placement;
  int memory_shards = 0;
  std::vector<DeviceBytes> memory_device_bytes;
  std::string memory_plan;
  int context_length = 0;  // tokens: prompt + generated <= this (max_seqlen)
  // The paged K/V cache: blocks of kv_block_tokens tokens, kv_cache_bytes
  // allocated in all.
  int kv_blocks = 0;
  int kv_block_tokens = 0;
  int64_t kv_cache_bytes = 0;
};

// One request that ended, as StepStats reports it.
struct FinishedRequestStats {
  absl::StatusCode code = absl::StatusCode::kOk;  // OK, or why it ended (RequestObserver::OnDone)
  FinishReason finish_reason = FinishReason::kLength;  // when code is OK
  int prompt_tokens = 0;
  int generation_tokens = 0;  // tokens sampled for it (also when it ended early)
  RequestTimings timings;
};

// What one engine step did: the engine's only report to metrics
// (EngineStatsObserver). Times are wall-clock seconds.
struct StepStats {
  absl::Time end;            // when the step finished
  double step_seconds = 0;   // plan + forward pass + sampling
  int scheduled_tokens = 0;  // tokens the forward pass computed (prompt chunks + decodes)
  // Prompt tokens of the requests whose first token came in this step (each
  // request's prompt counts once, however often it was recomputed).
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;  // tokens sampled
  int preemptions = 0;            // sequences sent back to recompute
  // Per request whose first token came in this step: seconds since Submit.
  std::vector<double> time_to_first_token;
  // Per token after a request's first: seconds since its previous token.
  std::vector<double> inter_token_latency;
  // Every request that ended in this step (finished, cancelled, expired,
  // failed); each request appears exactly once over the engine's life.
  std::vector<FinishedRequestStats> finished;
  MemoryReadStats memory;  // what the memory layers read in the forward pass
};

// Receives every step's StepStats, on the engine thread, right after the
// step. Must not block and must not call back into the Engine.
class EngineStatsObserver {
 public:
  virtual ~EngineStatsObserver() = default;
  virtual void OnStep(const StepStats& stats) = 0;
};

struct EngineStats {
  int running = 0;
  int waiting = 0;
  int kv_blocks_used = 0;
  int kv_blocks_total = 0;
  int kv_block_tokens = 0;
  int64_t requests_served = 0;  // ended OK
  int64_t steps = 0;
  int64_t preemptions = 0;  // sequences sent back to recompute (KV pool full)
  bool draining = false;
};

class Engine {
 public:
  // Assembles everything: checks the device, loads the model and tokenizer
  // (LoadModel), sizes and allocates the KV pool, builds the scheduler and
  // starts the engine thread. Errors: InvalidArgument naming the option
  // (--device, --block_size, --num_blocks, ...) and the limit; Unimplemented
  // for a device this build lacks (--device cuda); the load errors of
  // LoadModel (a missing or corrupt checkpoint, naming the file).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  // Cancels what is left (observers get Unavailable) and joins the thread.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Checks (ValidateRequest, engine/request/validate.h) and queues a request;
  // returns its engine id. Errors (the observer is then never called):
  // InvalidArgument naming the field and limit (prompt + max_tokens over the
  // context or the whole KV pool, bad options), ResourceExhausted (--max_queue requests already
  // wait), Unavailable (draining).
  absl::StatusOr<uint64_t> Submit(EngineRequest request, std::shared_ptr<RequestObserver> observer);

  // Stops request `id` (a no-op when it already ended): it leaves the queue or
  // the batch at the next step, its KV blocks are freed and its observer gets
  // Cancelled.
  void Cancel(uint64_t id);

  // Stops admitting (Submit returns Unavailable), lets in-flight requests
  // finish for up to `timeout`, then ends the rest with Unavailable. Returns
  // when nothing is in flight.
  void Drain(absl::Duration timeout);

  EngineStats Stats() const;
  // Registers the one observer of every step's StepStats (null: none), from
  // the next step on. REQUIRES: `observer` outlives the engine or is
  // unregistered (null) first.
  void SetStatsObserver(EngineStatsObserver* observer);
  const EngineInfo& Info() const { return info_; }
  const Model& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const SchedulerOptions& scheduler_options() const { return scheduler_->options(); }

 private:
  struct Live;  // per-request state of the engine loop
  Engine(LoadedModel loaded, std::unique_ptr<KvCacheManager> kv_cache,
         std::unique_ptr<Scheduler> scheduler, const EngineOptions& options);

  void Loop();
  // One step: plan, forward, sample, finish. False when there was nothing to do.
  bool Step();
  // Ends the requests in `ended` (already removed from the scheduler and
  // from live_) with their end_status and adds them to stats->finished;
  // called outside the lock.
  void FinishEarly(std::vector<std::unique_ptr<Live>> ended, StepStats* stats);

  const std::unique_ptr<Model> model_;
  const std::unique_ptr<Tokenizer> tokenizer_;
  const EngineOptions options_;
  EngineInfo info_;  // set by the constructor, then read-only
  // Guarded by mu_; changed only by the engine thread (through the
  // scheduler), which reads its tables and storage without the lock during
  // the forward pass. Destroyed before the model (its storage is the
  // model's backend memory) and after the scheduler that borrows it.
  const std::unique_ptr<KvCacheManager> kv_cache_;

  mutable std::mutex mu_;
  std::condition_variable wake_;          // work arrived, a cancel, or shutdown
  std::condition_variable idle_;          // nothing in flight (Drain waits on it)
  std::unique_ptr<Scheduler> scheduler_;  // guarded by mu_
  absl::flat_hash_map<uint64_t, std::unique_ptr<Live>> live_;  // guarded by mu_
  uint64_t next_id_ = 1;                                       // guarded by mu_
  bool draining_ = false;                                      // guarded by mu_
  bool stopping_ = false;                                      // guarded by mu_
  int64_t requests_served_ = 0;                                // guarded by mu_
  int64_t steps_ = 0;                                          // guarded by mu_
  int64_t preemptions_ = 0;                                    // guarded by mu_
  EngineStatsObserver* stats_observer_ = nullptr;              // guarded by mu_

  std::vector<float> logits_;  // engine thread only
  std::thread thread_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_ENGINE_H_
