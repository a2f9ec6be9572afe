// The batched engine on the bundled demo model: results equal one request at
// a time through Generate (greedy and seeded sampling, with and without
// preemption), and cancellation, deadlines, the queue bound and drain end
// requests with the documented statuses and leave no KV blocks behind.
#include "engine/engine.h"

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "engine/model_cpu.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::HasSubstr;

constexpr char kDemoDir[] = "models/demo";

// Collects one request's events; Wait() blocks until OnDone.
class Collector : public RequestObserver {
 public:
  void OnToken(const TokenEvent& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    ids_.push_back(event.id);
    text_ += event.text;
    cv_.notify_all();
  }
  void OnDone(absl::StatusOr<GenerateResult> result, const RequestTimings& timings) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(result);
    timings_ = timings;
    done_ = true;
    cv_.notify_all();
  }
  absl::StatusOr<GenerateResult> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return result_;
  }
  void WaitForTokens(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_ || ids_.size() >= n; });
  }
  std::vector<int> ids() {
    std::lock_guard<std::mutex> lock(mu_);
    return ids_;
  }
  std::string text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }
  RequestTimings timings() {
    std::lock_guard<std::mutex> lock(mu_);
    return timings_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> ids_;
  std::string text_;
  absl::StatusOr<GenerateResult> result_ = absl::UnknownError("not done");
  RequestTimings timings_;
  bool done_ = false;
};

std::vector<std::string> FactPrompts(int n) {
  std::ifstream in(absl::StrCat(kDemoDir, "/facts.jsonl"));
  std::vector<std::string> prompts;
  std::string line;
  const std::string key = "\"prompt\": \"";
  while (static_cast<int>(prompts.size()) < n && std::getline(in, line)) {
    const size_t at = line.find(key);
    if (at == std::string::npos) continue;
    const size_t begin = at + key.size();
    prompts.push_back(line.substr(begin, line.find('"', begin) - begin));
  }
  return prompts;
}

struct Solo {
  std::vector<int> ids;
  GenerateResult result;
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    LoadOptions load;
    load.model_dir = kDemoDir;
    load.threads = 2;
    auto loaded = LoadModel(load);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    solo_model_ = loaded->model.release();
    tokenizer_ = loaded->tokenizer.release();
  }

  std::unique_ptr<Engine> MakeEngine(EngineOptions options) {
    options.model_dir = kDemoDir;
    options.threads = 2;
    auto engine = Engine::Create(options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(*engine);
  }

  static GenerateOptions Options(const std::string& prompt, int max_tokens) {
    GenerateOptions o;
    o.prompt = prompt;
    o.max_tokens = max_tokens;
    o.sampling.temperature = 0.0f;
    return o;
  }

  // A greedy request that ignores EOS, so it runs exactly max_tokens steps.
  static GenerateOptions Long(int max_tokens) {
    GenerateOptions o = Options("The capital of", max_tokens);
    o.ignore_eos = true;
    return o;
  }

  // Submits `o` and waits until it produced its first token (it is running).
  static std::shared_ptr<Collector> SubmitRunning(Engine& engine, const GenerateOptions& o) {
    auto out = std::make_shared<Collector>();
    auto id = engine.Submit(Request(o), out);
    EXPECT_TRUE(id.ok()) << id.status();
    if (id.ok()) out->WaitForTokens(1);
    return out;
  }

  static Solo RunSolo(const GenerateOptions& o) {
    Solo solo;
    auto r = Generate(*solo_model_, *tokenizer_, o,
                      [&](const TokenEvent& ev) { solo.ids.push_back(ev.id); });
    EXPECT_TRUE(r.ok()) << r.status();
    solo.result = *r;
    return solo;
  }

  static EngineRequest Request(const GenerateOptions& o) {
    EngineRequest r;
    r.prompt = *tokenizer_->Encode(o.prompt, /*add_bos=*/true);
    r.options = o;
    return r;
  }

  // Submits every request at once and checks each against its solo run.
  void ExpectBatchEqualsSolo(Engine& engine, const std::vector<GenerateOptions>& requests) {
    std::vector<Solo> solo;
    for (const GenerateOptions& o : requests) solo.push_back(RunSolo(o));
    std::vector<std::shared_ptr<Collector>> out;
    for (const GenerateOptions& o : requests) {
      out.push_back(std::make_shared<Collector>());
      ASSERT_TRUE(engine.Submit(Request(o), out.back()).ok());
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      auto r = out[i]->Wait();
      ASSERT_TRUE(r.ok()) << i << ": " << r.status();
      EXPECT_EQ(out[i]->ids(), solo[i].ids) << "request " << i << ": " << requests[i].prompt;
      EXPECT_EQ(r->text, solo[i].result.text) << i;
      EXPECT_EQ(r->finish_reason, solo[i].result.finish_reason) << i;
      EXPECT_EQ(r->completion_tokens, static_cast<int>(solo[i].ids.size())) << i;
    }
    ExpectIdle(engine);
  }

  static void ExpectIdle(const Engine& engine) {
    // OnDone runs before the engine publishes the final counts; poll briefly.
    for (int i = 0; i < 200; ++i) {
      const EngineStats s = engine.Stats();
      if (s.running == 0 && s.waiting == 0 && s.kv_blocks_used == 0) return;
      absl::SleepFor(absl::Milliseconds(5));
    }
    const EngineStats s = engine.Stats();
    FAIL() << "engine not idle: running " << s.running << " waiting " << s.waiting
           << " kv_blocks_used " << s.kv_blocks_used;
  }

  static Model* solo_model_;
  static Tokenizer* tokenizer_;
};

Model* EngineTest::solo_model_ = nullptr;
Tokenizer* EngineTest::tokenizer_ = nullptr;

TEST_F(EngineTest, ConcurrentGreedyRequestsEqualSoloRuns) {
  EngineOptions options;
  options.scheduler.max_batch_size = 32;
  auto engine = MakeEngine(options);
  std::vector<GenerateOptions> requests;
  for (const std::string& p : FactPrompts(48)) requests.push_back(Options(p, 24));
  ASSERT_EQ(requests.size(), 48u);
  ExpectBatchEqualsSolo(*engine, requests);
  EXPECT_EQ(engine->Stats().requests_served, 48);
}

TEST_F(EngineTest, ChunkedPrefillAndPreemptionKeepResults) {
  EngineOptions options;
  options.scheduler.max_batch_size = 16;
  options.scheduler.max_num_tokens = 24;
  options.scheduler.prefill_chunk = 5;
  options.scheduler.block_size = 4;
  options.scheduler.num_blocks = 40;  // 160 tokens: a few sequences at a time, so preemption
  auto engine = MakeEngine(options);
  std::vector<GenerateOptions> requests;
  for (const std::string& p : FactPrompts(16)) {
    GenerateOptions o = Options(p, 40);
    o.ignore_eos = true;  // long sequences fill the pool
    requests.push_back(o);
  }
  ExpectBatchEqualsSolo(*engine, requests);
  EXPECT_GT(engine->Stats().preemptions, 0);
}

TEST_F(EngineTest, SeededSamplingIsBatchInvariant) {
  auto engine = MakeEngine(EngineOptions{});
  std::vector<GenerateOptions> requests;
  int seed = 0;
  for (const std::string& p : FactPrompts(16)) {
    GenerateOptions o = Options(p, 20);
    o.sampling.temperature = 1.3f;
    o.sampling.top_p = 0.95f;
    o.sampling.has_seed = true;
    o.sampling.seed = 1000 + seed++;
    o.ignore_eos = true;
    requests.push_back(o);
  }
  ExpectBatchEqualsSolo(*engine, requests);
}

TEST_F(EngineTest, CancelEndsRequestAndFreesBlocks) {
  EngineOptions options;
  options.debug_step_delay = absl::Milliseconds(5);
  auto engine = MakeEngine(options);
  auto out = std::make_shared<Collector>();
  auto id = engine->Submit(Request(Long(100)), out);
  ASSERT_TRUE(id.ok()) << id.status();
  out->WaitForTokens(2);
  EXPECT_GT(engine->Stats().kv_blocks_used, 0);
  engine->Cancel(*id);
  auto r = out->Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_LT(out->ids().size(), 100u);
  ExpectIdle(*engine);
  EXPECT_EQ(engine->Stats().requests_served, 0);
  engine->Cancel(*id);  // already ended: a no-op
}

TEST_F(EngineTest, DeadlineEndsQueuedAndRunningRequests) {
  EngineOptions options;
  options.debug_step_delay = absl::Milliseconds(5);
  auto engine = MakeEngine(options);
  const GenerateOptions o = Long(100);
  EngineRequest running = Request(o);
  running.deadline = absl::Now() + absl::Milliseconds(100);
  auto out = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(std::move(running), out).ok());
  EngineRequest expired = Request(o);
  expired.deadline = absl::Now() - absl::Seconds(1);
  auto out2 = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(std::move(expired), out2).ok());
  EXPECT_EQ(out->Wait().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GT(out->ids().size(), 0u);
  EXPECT_EQ(out2->Wait().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(out2->ids().empty());
  ExpectIdle(*engine);
}

TEST_F(EngineTest, FullQueueIsResourceExhaustedAtOnce) {
  EngineOptions options;
  options.scheduler.max_batch_size = 1;
  options.scheduler.max_queue = 1;
  options.debug_step_delay = absl::Milliseconds(5);
  auto engine = MakeEngine(options);
  const GenerateOptions o = Long(30);
  auto first = SubmitRunning(*engine, o);  // running; the queue is empty again
  auto second = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Request(o), second).ok());
  auto third = engine->Submit(Request(o), std::make_shared<Collector>());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("--max_queue"));
  EXPECT_TRUE(first->Wait().ok());
  EXPECT_TRUE(second->Wait().ok());
  ExpectIdle(*engine);
}

TEST_F(EngineTest, BadRequestsNameTheField) {
  auto engine = MakeEngine(EngineOptions{});
  auto submit = [&](EngineRequest r) {
    return engine->Submit(std::move(r), std::make_shared<Collector>()).status();
  };
  GenerateOptions o = Options("x", 8);
  EngineRequest r = Request(o);
  r.prompt.clear();
  EXPECT_THAT(submit(r).message(), HasSubstr("prompt is empty"));
  r = Request(o);
  r.prompt.push_back(100000);
  EXPECT_THAT(submit(r).message(), HasSubstr("prompt[2] = 100000 is outside the vocabulary"));
  r = Request(o);
  r.options.max_tokens = 0;
  EXPECT_THAT(submit(r).message(), HasSubstr("max_tokens must be in [1, 128]"));
  r.options.max_tokens = 127;  // 2 prompt tokens + 127 > 128
  EXPECT_THAT(submit(r).message(), HasSubstr("exceeds the model's context of 128"));
  r = Request(o);
  r.options.sampling.top_p = 0.0f;
  EXPECT_THAT(submit(r).message(), HasSubstr("top_p"));
  r = Request(o);
  r.options.stop.assign(10000, "x");
  EXPECT_THAT(submit(r).message(), HasSubstr("stop has 10000 strings; the limit is 64"));
  ExpectIdle(*engine);
}

TEST(EngineCreateTest, BadModelDirNamesTheFile) {
  EngineOptions options;
  options.model_dir = "/nonexistent/memserve/model";
  auto engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().code(), absl::StatusCode::kOk);
  EXPECT_THAT(engine.status().message(), HasSubstr("/nonexistent/memserve/model"));
}

// --device cuda: where the build has no CUDA (Unimplemented) or no GPU is
// visible (Unavailable), Create fails with the device check's status, naming
// the flag; with a GPU the engine is assembled on it.
TEST(EngineCreateTest, CudaNamesTheFlagWhereItCannotRun) {
  const absl::Status available = CheckDeviceAvailable(Device::kCuda);
  EngineOptions options;
  options.model_dir = kDemoDir;
  options.device = Device::kCuda;
  auto engine = Engine::Create(options);
  if (available.ok()) {
    ASSERT_TRUE(engine.ok()) << engine.status();
    EXPECT_EQ((*engine)->Info().device, "cuda");
    return;
  }
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), available.code());
  EXPECT_THAT(engine.status().message(), HasSubstr("--device cuda"));
}

TEST(EngineCreateTest, UnknownDeviceIsInvalidArgumentNamingTheFlag) {
  auto device = ParseDevice("tpu");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(device.status().message(), "--device must be cpu or cuda, got 'tpu'");
  EXPECT_EQ(*ParseDevice("cpu"), Device::kCpu);
  EXPECT_EQ(*ParseDevice("cuda"), Device::kCuda);
}

TEST(EngineCreateTest, BadSchedulerOptionNamesTheFlag) {
  EngineOptions options;
  options.model_dir = kDemoDir;
  options.scheduler.block_size = 0;
  auto engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(engine.status().message(), HasSubstr("--block_size"));
}

TEST_F(EngineTest, InfoDescribesTheAssembledEngine) {
  EngineOptions options;
  options.scheduler.block_size = 16;
  options.scheduler.num_blocks = 10;
  auto engine = MakeEngine(options);
  const EngineInfo& info = engine->Info();
  EXPECT_EQ(info.model_name, "demo");  // the directory's base name
  EXPECT_EQ(info.model_dir, kDemoDir);
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.tokenizer, tokenizer_->kind());
  EXPECT_EQ(info.bos_id, tokenizer_->bos_id());
  EXPECT_EQ(info.eos_id, tokenizer_->eos_id());
  EXPECT_EQ(info.context_length, solo_model_->config().max_seqlen);
  EXPECT_EQ(info.config.dim, solo_model_->config().dim);
  ASSERT_FALSE(info.config.memory.layers.empty());  // the demo model has memory layers
  EXPECT_EQ(info.value_table_placement, "cpu-mmap");
  EXPECT_EQ(info.value_table_bytes, solo_model_->value_table_bytes());
  EXPECT_GT(info.value_table_bytes, 0);
  EXPECT_EQ(info.kv_blocks, 10);
  EXPECT_EQ(info.kv_block_tokens, 16);
  EXPECT_EQ(info.kv_cache_bytes, 10 * solo_model_->KvBytesPerBlock(16));

  options.model_name = "served-as";
  EXPECT_EQ(MakeEngine(options)->Info().model_name, "served-as");
}

TEST_F(EngineTest, DrainFinishesInFlightAndRefusesNewRequests) {
  EngineOptions options;
  options.debug_step_delay = absl::Milliseconds(2);
  auto engine = MakeEngine(options);
  auto out = SubmitRunning(*engine, Long(30));
  engine->Drain(absl::Seconds(30));
  auto r = out->Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->completion_tokens, 30);
  auto late = engine->Submit(Request(Long(30)), std::make_shared<Collector>());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(engine->Stats().draining);
}

TEST_F(EngineTest, DrainTimeoutEndsLongRequestsUnavailable) {
  EngineOptions options;
  options.debug_step_delay = absl::Milliseconds(10);
  auto engine = MakeEngine(options);
  auto out = SubmitRunning(*engine, Long(100));
  engine->Drain(absl::Milliseconds(50));
  EXPECT_EQ(out->Wait().status().code(), absl::StatusCode::kUnavailable);
  ExpectIdle(*engine);
}

TEST_F(EngineTest, TimingsAreOrdered) {
  auto engine = MakeEngine(EngineOptions{});
  auto out = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Request(Options("The capital of", 5)), out).ok());
  ASSERT_TRUE(out->Wait().ok());
  const RequestTimings t = out->timings();
  EXPECT_LE(t.submitted, t.admitted);
  EXPECT_LE(t.admitted, t.first_token);
  EXPECT_LE(t.first_token, t.done);
}

TEST_F(EngineTest, DestroyingTheEngineEndsPendingRequests) {
  EngineOptions options;
  options.debug_step_delay = absl::Milliseconds(10);
  auto out = std::make_shared<Collector>();
  {
    auto engine = MakeEngine(options);
    ASSERT_TRUE(engine->Submit(Request(Long(100)), out).ok());
  }
  EXPECT_EQ(out->Wait().status().code(), absl::StatusCode::kUnavailable);
}

// Keeps every StepStats the engine publishes.
class StepRecorder : public EngineStatsObserver {
 public:
  void OnStep(const StepStats& stats) override {
    std::lock_guard<std::mutex> lock(mu_);
    steps_.push_back(stats);
  }
  std::vector<StepStats> steps() {
    std::lock_guard<std::mutex> lock(mu_);
    return steps_;
  }

 private:
  std::mutex mu_;
  std::vector<StepStats> steps_;
};

TEST_F(EngineTest, StepStatsAddUpToTheRequests) {
  EngineOptions options;
  options.scheduler.max_batch_size = 16;
  options.scheduler.max_num_tokens = 24;
  options.scheduler.prefill_chunk = 5;
  options.scheduler.block_size = 4;
  options.scheduler.num_blocks = 40;  // preemption, as in ChunkedPrefillAndPreemptionKeepResults
  auto engine = MakeEngine(options);
  StepRecorder recorder;
  engine->SetStatsObserver(&recorder);
  std::vector<std::shared_ptr<Collector>> out;
  int64_t prompt_tokens = 0;
  for (const std::string& p : FactPrompts(12)) {
    GenerateOptions o = Options(p, 30);
    o.ignore_eos = true;
    EngineRequest r = Request(o);
    prompt_tokens += static_cast<int64_t>(r.prompt.size());
    out.push_back(std::make_shared<Collector>());
    ASSERT_TRUE(engine->Submit(std::move(r), out.back()).ok());
  }
  int64_t completion_tokens = 0;
  for (auto& c : out) {
    auto r = c->Wait();
    ASSERT_TRUE(r.ok()) << r.status();
    completion_tokens += r->completion_tokens;
  }
  ExpectIdle(*engine);
  engine.reset();  // the last step has been published

  const ModelConfig& config = solo_model_->config();
  const int64_t rows_per_token =
      static_cast<int64_t>(config.memory.layers.size()) * config.memory.heads * config.memory.knn;
  int64_t steps_prompt = 0, steps_generated = 0, preemptions = 0, ttft = 0, itl = 0;
  int64_t sampled = 0, distinct = 0;
  std::vector<FinishedRequestStats> finished;
  const std::vector<StepStats> steps = recorder.steps();
  ASSERT_FALSE(steps.empty());
  for (const StepStats& s : steps) {
    steps_prompt += s.prompt_tokens;
    steps_generated += s.generation_tokens;
    preemptions += s.preemptions;
    ttft += static_cast<int64_t>(s.time_to_first_token.size());
    itl += static_cast<int64_t>(s.inter_token_latency.size());
    for (double t : s.time_to_first_token) EXPECT_GE(t, 0);
    for (double t : s.inter_token_latency) EXPECT_GE(t, 0);
    finished.insert(finished.end(), s.finished.begin(), s.finished.end());
    EXPECT_EQ(s.memory.rows_read, s.scheduled_tokens * rows_per_token);
    EXPECT_GE(s.step_seconds, s.memory.seconds);
    sampled += s.memory.rows_sampled;
    distinct += s.memory.distinct_rows;
  }
  EXPECT_EQ(steps_prompt, prompt_tokens);  // each prompt once, recomputes not counted again
  EXPECT_EQ(steps_generated, completion_tokens);
  EXPECT_GT(preemptions, 0);
  EXPECT_EQ(ttft, 12);
  EXPECT_EQ(itl, completion_tokens - 12);
  ASSERT_EQ(finished.size(), 12u);
  for (const FinishedRequestStats& f : finished) {
    EXPECT_EQ(f.code, absl::StatusCode::kOk);
    EXPECT_EQ(f.finish_reason, FinishReason::kLength);
    EXPECT_EQ(f.generation_tokens, 30);
    EXPECT_LE(f.timings.submitted, f.timings.admitted);
    EXPECT_LE(f.timings.admitted, f.timings.first_token);
    EXPECT_LE(f.timings.first_token, f.timings.last_token);
    EXPECT_LE(f.timings.last_token, f.timings.done);
  }
  // Distinct rows are counted on a sample of the steps (the first one included).
  EXPECT_GT(sampled, 0);
  EXPECT_GT(distinct, 0);
  EXPECT_LE(distinct, sampled);
}

TEST_F(EngineTest, StepStatsReportRequestsThatEndEarly) {
  EngineOptions options;
  options.debug_step_delay = absl::Milliseconds(5);
  auto engine = MakeEngine(options);
  StepRecorder recorder;
  engine->SetStatsObserver(&recorder);
  auto out = std::make_shared<Collector>();
  auto id = engine->Submit(Request(Long(100)), out);
  ASSERT_TRUE(id.ok());
  out->WaitForTokens(2);
  engine->Cancel(*id);
  ASSERT_EQ(out->Wait().status().code(), absl::StatusCode::kCancelled);
  ExpectIdle(*engine);
  engine.reset();
  std::vector<FinishedRequestStats> finished;
  for (const StepStats& s : recorder.steps()) {
    finished.insert(finished.end(), s.finished.begin(), s.finished.end());
  }
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].code, absl::StatusCode::kCancelled);
  EXPECT_EQ(finished[0].generation_tokens, static_cast<int>(out->ids().size()));
}

}  // namespace
}  // namespace memserve
