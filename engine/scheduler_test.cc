#include "engine/scheduler.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "engine/kv_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::UnixEpoch();

SchedulerOptions Options(int max_batch_size, int max_num_tokens, int block_size, int num_blocks,
                         int prefill_chunk = 0) {
  SchedulerOptions o;
  o.max_batch_size = max_batch_size;
  o.max_num_tokens = max_num_tokens;
  o.max_queue = 16;
  o.block_size = block_size;
  o.num_blocks = num_blocks;
  o.prefill_chunk = prefill_chunk;
  return o;
}

// A scheduler over a bookkeeping-only KV cache (no storage, no model).
struct TestScheduler {
  std::unique_ptr<KvCacheManager> kv;
  std::unique_ptr<Scheduler> scheduler;

  Scheduler* operator->() const { return scheduler.get(); }
  Scheduler* get() const { return scheduler.get(); }
};

TestScheduler MakeScheduler(const SchedulerOptions& options) {
  TestScheduler t;
  t.kv = std::make_unique<KvCacheManager>(options.num_blocks, options.block_size);
  absl::StatusOr<std::unique_ptr<Scheduler>> s = Scheduler::Create(options, t.kv.get());
  EXPECT_TRUE(s.ok()) << s.status();
  if (s.ok()) t.scheduler = *std::move(s);
  return t;
}

SequenceRequest Request(uint64_t id, int prompt_tokens, int max_tokens,
                        absl::Time deadline = absl::InfiniteFuture()) {
  SequenceRequest r;
  r.id = id;
  r.prompt_tokens = prompt_tokens;
  r.max_tokens = max_tokens;
  r.deadline = deadline;
  return r;
}

// "7: [0,4) prefill", "7: [8,10) prefill logits", "7: [10,11) decode logits".
std::vector<std::string> Chunks(const StepPlan& plan) {
  std::vector<std::string> out;
  for (const StepChunk& c : plan.chunks) {
    out.push_back(absl::StrCat(c.id, ": [", c.first_position, ",", c.first_position + c.num_tokens,
                               ") ", c.is_prefill ? "prefill" : "decode",
                               c.wants_logits ? " logits" : ""));
  }
  return out;
}

std::vector<uint64_t> Finish(Scheduler* s, const StepPlan& plan,
                             std::vector<uint64_t> stopped = {}) {
  absl::StatusOr<std::vector<uint64_t>> finished = s->OnStepDone(plan, stopped);
  EXPECT_TRUE(finished.ok()) << finished.status();
  return finished.ok() ? *finished : std::vector<uint64_t>{};
}

// --- options and Enqueue ---

TEST(SchedulerOptionsTest, ValidateNamesTheFlagAndLimit) {
  struct Case {
    void (*break_it)(SchedulerOptions*);
    const char* message;
  };
  const Case cases[] = {
      {[](SchedulerOptions* o) { o->max_batch_size = 0; }, "--max_batch_size must be >= 1"},
      {[](SchedulerOptions* o) { o->max_num_tokens = 0; }, "--max_num_tokens must be >= 1"},
      {[](SchedulerOptions* o) { o->max_queue = 0; }, "--max_queue must be >= 1"},
      {[](SchedulerOptions* o) { o->block_size = 0; }, "--block_size must be >= 1"},
      {[](SchedulerOptions* o) { o->num_blocks = 0; }, "--num_blocks must be >= 1"},
      {[](SchedulerOptions* o) { o->prefill_chunk = -1; }, "--prefill_chunk must be >= 0"},
      {[](SchedulerOptions* o) { o->num_blocks = 1 << 28; },
       "--num_blocks x --block_size (268435456 x 16) must be <= 2147483647 tokens"},
      {[](SchedulerOptions* o) { o->max_num_tokens = 7; },
       "--max_num_tokens must be >= --max_batch_size (8)"},
  };
  ASSERT_TRUE(Options(8, 64, 16, 100).Validate().ok());
  for (const Case& c : cases) {
    SchedulerOptions o = Options(8, 64, 16, 100);
    c.break_it(&o);
    const absl::Status s = o.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
    KvCacheManager kv(100, 16);
    EXPECT_FALSE(Scheduler::Create(o, &kv).ok());
  }
}

TEST(SchedulerTest, KvCacheMustMatchTheOptions) {
  const SchedulerOptions o = Options(8, 64, 16, 100);
  KvCacheManager fits(100, 16), fewer_blocks(99, 16), other_block_size(100, 8);
  EXPECT_TRUE(Scheduler::Create(o, &fits).ok());
  const absl::Status fewer = Scheduler::Create(o, &fewer_blocks).status();
  EXPECT_EQ(fewer.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fewer.message(), HasSubstr("99 blocks of 16 tokens, but --num_blocks=100"));
  EXPECT_FALSE(Scheduler::Create(o, &other_block_size).ok());
  EXPECT_FALSE(Scheduler::Create(o, nullptr).ok());
}

TEST(SchedulerTest, RejectsRequestsThatCanNeverFitThePool) {
  auto s = MakeScheduler(Options(4, 64, 4, 4));  // 16 tokens
  const absl::Status too_big = s->Enqueue(Request(1, 10, 7));
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.message(), HasSubstr("16 tokens (--num_blocks=4 x --block_size=4)"));
  EXPECT_TRUE(s->Enqueue(Request(2, 10, 6)).ok());
}

TEST(SchedulerTest, RejectsEmptyPromptZeroMaxTokensAndDuplicateIds) {
  auto s = MakeScheduler(Options(4, 64, 4, 4));
  EXPECT_THAT(s->Enqueue(Request(1, 0, 1)).message(), HasSubstr("prompt_tokens must be >= 1"));
  EXPECT_THAT(s->Enqueue(Request(1, 1, 0)).message(), HasSubstr("max_tokens must be >= 1"));
  ASSERT_TRUE(s->Enqueue(Request(1, 1, 1)).ok());
  EXPECT_EQ(s->Enqueue(Request(1, 1, 1)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s->Stats().waiting, 1);
}

TEST(SchedulerTest, FullQueueIsResourceExhaustedUntilSomethingIsAdmitted) {
  SchedulerOptions o = Options(1, 64, 4, 64);
  o.max_queue = 2;
  auto s = MakeScheduler(o);
  ASSERT_TRUE(s->Enqueue(Request(1, 4, 4)).ok());
  ASSERT_TRUE(s->Enqueue(Request(2, 4, 4)).ok());
  const absl::Status full = s->Enqueue(Request(3, 4, 4));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("--max_queue=2"));
  EXPECT_EQ(s->Find(3), nullptr);
  s->Schedule(kT0);  // admits 1 (batch of one)
  EXPECT_TRUE(s->Enqueue(Request(3, 4, 4)).ok());
}

// --- exact plans ---

TEST(SchedulerTest, ChunkedPrefillThenDecodeToMaxTokens) {
  auto s = MakeScheduler(Options(4, 16, 4, 16, /*prefill_chunk=*/4));
  ASSERT_TRUE(s->Enqueue(Request(7, 10, 3)).ok());
  const std::vector<std::string> expected_chunk_per_step = {
      "7: [0,4) prefill",         "7: [4,8) prefill",
      "7: [8,10) prefill logits",  // first token sampled
      "7: [10,11) decode logits",
      "7: [11,12) decode logits",  // third token: max_tokens
  };
  for (size_t step = 0; step < expected_chunk_per_step.size(); ++step) {
    const StepPlan plan = s->Schedule(kT0);
    EXPECT_THAT(Chunks(plan), ElementsAre(expected_chunk_per_step[step])) << "step " << step;
    const std::vector<uint64_t> finished = Finish(s.get(), plan);
    if (step + 1 < expected_chunk_per_step.size()) {
      EXPECT_THAT(finished, IsEmpty());
      EXPECT_EQ(s.kv->num_tokens(7), s->Find(7)->num_computed);
    } else {
      EXPECT_THAT(finished, ElementsAre(7));
    }
  }
  EXPECT_EQ(s->Find(7), nullptr);
  EXPECT_EQ(s->Stats().kv_blocks_used, 0);
  EXPECT_EQ(s->Stats().running, 0);
  EXPECT_THAT(Chunks(s->Schedule(kT0)), IsEmpty());
}

TEST(SchedulerTest, LongPromptIsChunkedAroundRunningDecodes) {
  auto s = MakeScheduler(Options(4, 8, 4, 64));  // prefill_chunk = max_num_tokens
  ASSERT_TRUE(s->Enqueue(Request(1, 2, 100)).ok());
  Finish(s.get(), s->Schedule(kT0));
  ASSERT_TRUE(s->Enqueue(Request(2, 30, 1)).ok());
  std::vector<std::vector<std::string>> plans;
  for (int step = 0; step < 6; ++step) {
    const StepPlan plan = s->Schedule(kT0);
    plans.push_back(Chunks(plan));
    Finish(s.get(), plan);
  }
  EXPECT_THAT(plans, ElementsAre(ElementsAre("1: [2,3) decode logits", "2: [0,7) prefill"),
                                 ElementsAre("1: [3,4) decode logits", "2: [7,14) prefill"),
                                 ElementsAre("1: [4,5) decode logits", "2: [14,21) prefill"),
                                 ElementsAre("1: [5,6) decode logits", "2: [21,28) prefill"),
                                 ElementsAre("1: [6,7) decode logits", "2: [28,30) prefill logits"),
                                 ElementsAre("1: [7,8) decode logits")));
}

TEST(SchedulerTest, BatchSizeLimitsAdmission) {
  auto s = MakeScheduler(Options(2, 64, 4, 64));
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(s->Enqueue(Request(id, 3, 2)).ok());
  StepPlan plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [0,3) prefill logits", "2: [0,3) prefill logits"));
  Finish(s.get(), plan);
  plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [3,4) decode logits", "2: [3,4) decode logits"));
  EXPECT_THAT(Finish(s.get(), plan), ElementsAre(1, 2));
  EXPECT_THAT(Chunks(s->Schedule(kT0)), ElementsAre("3: [0,3) prefill logits"));
}

TEST(SchedulerTest, HeadOfQueueThatDoesNotFitIsNotOvertaken) {
  auto s = MakeScheduler(Options(4, 16, 4, 4));  // 16 tokens
  ASSERT_TRUE(s->Enqueue(Request(1, 5, 3)).ok());
  Finish(s.get(), s->Schedule(kT0));                // 1 holds 2 blocks
  ASSERT_TRUE(s->Enqueue(Request(2, 12, 1)).ok());  // needs 3 blocks, 2 free
  ASSERT_TRUE(s->Enqueue(Request(3, 2, 1)).ok());   // would fit
  const StepPlan plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [5,6) decode logits"));
  EXPECT_EQ(s->Stats().waiting, 2);
}

TEST(SchedulerTest, DecodeOutOfBlocksPreemptsTheNewestWhichRecomputesLater) {
  auto s = MakeScheduler(Options(2, 8, 2, 4));  // 4 blocks of 2 tokens
  ASSERT_TRUE(s->Enqueue(Request(1, 3, 4)).ok());
  ASSERT_TRUE(s->Enqueue(Request(2, 3, 4)).ok());
  StepPlan plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [0,3) prefill logits", "2: [0,3) prefill logits"));
  Finish(s.get(), plan);
  plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [3,4) decode logits", "2: [3,4) decode logits"));
  Finish(s.get(), plan);
  EXPECT_EQ(s->Stats().kv_blocks_used, 4);

  // 1 needs a third block: 2 (the newest) is preempted in the same call and
  // not readmitted in this step.
  plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [4,5) decode logits"));
  EXPECT_THAT(plan.preempted, ElementsAre(2));
  EXPECT_EQ(s->Stats().kv_blocks_used, 3);
  EXPECT_EQ(s->Stats().waiting, 1);
  EXPECT_EQ(s->Find(2)->state, RequestState::kPreempted);
  EXPECT_EQ(s->Find(2)->num_computed, 0);
  EXPECT_EQ(s->Find(2)->num_generated, 2);
  Finish(s.get(), plan);

  plan = s->Schedule(kT0);  // 2 must recompute 5 tokens (3 blocks); 1 free
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [5,6) decode logits"));
  EXPECT_THAT(Finish(s.get(), plan), ElementsAre(1));

  // Prompt and the 2 generated tokens, then its last 2 tokens.
  plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("2: [0,5) prefill logits"));
  EXPECT_EQ(s->Find(2)->state, RequestState::kRunning);
  Finish(s.get(), plan);
  plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("2: [5,6) decode logits"));
  EXPECT_THAT(Finish(s.get(), plan), ElementsAre(2));
  EXPECT_EQ(s->Stats().kv_blocks_used, 0);
}

TEST(SchedulerTest, NewestSequenceOutOfBlocksPreemptsItself) {
  auto s = MakeScheduler(Options(2, 8, 2, 4));
  ASSERT_TRUE(s->Enqueue(Request(1, 3, 3)).ok());
  ASSERT_TRUE(s->Enqueue(Request(2, 4, 3)).ok());
  Finish(s.get(), s->Schedule(kT0));
  // 1 decodes at position 3 inside its second block; 2 needs a third block.
  const StepPlan plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [3,4) decode logits"));
  EXPECT_THAT(plan.preempted, ElementsAre(2));
  EXPECT_EQ(s->Stats().kv_blocks_used, 2);
}

TEST(SchedulerTest, PreemptedSequenceIsNotReadmittedInTheSameStep) {
  auto s = MakeScheduler(Options(2, 4, 2, 5, /*prefill_chunk=*/2));
  ASSERT_TRUE(s->Enqueue(Request(1, 2, 5)).ok());
  ASSERT_TRUE(s->Enqueue(Request(2, 5, 3)).ok());
  for (int step = 0; step < 3; ++step) Finish(s.get(), s->Schedule(kT0));
  EXPECT_EQ(s->Stats().kv_blocks_used, 5);
  // 1 needs a block: 2 gives back 3. Its first chunk would fit in the 2 left
  // over, but it waits for the next step.
  StepPlan plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [4,5) decode logits"));
  EXPECT_THAT(plan.preempted, ElementsAre(2));
  Finish(s.get(), plan);
  EXPECT_THAT(Chunks(s->Schedule(kT0)), ElementsAre("1: [5,6) decode logits", "2: [0,2) prefill"));
}

TEST(SchedulerTest, PromptChunkShrinksToFreeBlocksThenPreemptsItself) {
  auto s = MakeScheduler(Options(2, 8, 2, 4, /*prefill_chunk=*/3));
  ASSERT_TRUE(s->Enqueue(Request(1, 2, 6)).ok());
  ASSERT_TRUE(s->Enqueue(Request(2, 6, 1)).ok());
  StepPlan plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [0,2) prefill logits", "2: [0,3) prefill"));
  Finish(s.get(), plan);
  // 1 takes the last free block; 2 still has room for one token in its own.
  plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [2,3) decode logits", "2: [3,4) prefill"));
  Finish(s.get(), plan);
  plan = s->Schedule(kT0);
  EXPECT_THAT(Chunks(plan), ElementsAre("1: [3,4) decode logits"));
  EXPECT_THAT(plan.preempted, ElementsAre(2));
}

TEST(SchedulerTest, CancelAndDeadlineFreeBlocksInTheSameSchedule) {
  auto s = MakeScheduler(Options(2, 64, 4, 16));
  const absl::Time deadline = kT0 + absl::Seconds(1);
  ASSERT_TRUE(s->Enqueue(Request(1, 8, 4)).ok());
  ASSERT_TRUE(s->Enqueue(Request(2, 8, 4, deadline)).ok());
  ASSERT_TRUE(s->Enqueue(Request(3, 8, 4, deadline)).ok());  // waits: batch of 2
  ASSERT_TRUE(s->Enqueue(Request(4, 8, 4)).ok());
  Finish(s.get(), s->Schedule(kT0));
  EXPECT_EQ(s->Stats().kv_blocks_used, 4);

  ASSERT_TRUE(s->Cancel(1).ok());
  ASSERT_TRUE(s->Cancel(4).ok());
  EXPECT_EQ(s->Stats().kv_blocks_used, 4);  // freed by the next Schedule
  const StepPlan plan = s->Schedule(deadline);
  std::map<uint64_t, DropReason> dropped;
  for (const DroppedSequence& d : plan.dropped) dropped[d.id] = d.reason;
  EXPECT_EQ(dropped, (std::map<uint64_t, DropReason>{{1, DropReason::kCancelled},
                                                     {2, DropReason::kDeadlineExceeded},
                                                     {3, DropReason::kDeadlineExceeded},
                                                     {4, DropReason::kCancelled}}));
  EXPECT_THAT(plan.chunks, IsEmpty());
  EXPECT_EQ(s->Stats().kv_blocks_used, 0);
  EXPECT_EQ(s->Stats().running, 0);
  EXPECT_EQ(s->Stats().waiting, 0);
  for (uint64_t id = 1; id <= 4; ++id) {
    EXPECT_EQ(s->Find(id), nullptr);
    EXPECT_EQ(s->Cancel(id).code(), absl::StatusCode::kNotFound);
  }
}

TEST(SchedulerTest, StoppedSequenceEndsBeforeMaxTokens) {
  auto s = MakeScheduler(Options(2, 64, 4, 64));
  ASSERT_TRUE(s->Enqueue(Request(1, 5, 100)).ok());
  ASSERT_TRUE(s->Enqueue(Request(2, 5, 100)).ok());
  const StepPlan plan = s->Schedule(kT0);
  EXPECT_THAT(Finish(s.get(), plan, {2}), ElementsAre(2));
  EXPECT_EQ(s->Stats().running, 1);
  EXPECT_EQ(s->Stats().kv_blocks_used, 2);
}

TEST(SchedulerTest, OnStepDoneRejectsStalePlansAndUnsampledStops) {
  auto s = MakeScheduler(Options(2, 64, 4, 16, /*prefill_chunk=*/4));
  ASSERT_TRUE(s->Enqueue(Request(1, 6, 3)).ok());
  const StepPlan plan = s->Schedule(kT0);  // [0,4): no token sampled
  const std::vector<uint64_t> stop = {1};
  EXPECT_EQ(s->OnStepDone(plan, stop).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Find(1)->num_computed, 0);  // nothing applied
  ASSERT_TRUE(s->OnStepDone(plan, {}).ok());
  EXPECT_EQ(s->OnStepDone(plan, {}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s->Find(1)->num_computed, 4);
}

// --- simulation with random traffic ---

struct SimulationConfig {
  SchedulerOptions options;
  int arrival_steps = 1500;   // steps with arrivals; then it drains
  double arrival_rate = 0.5;  // new requests per step (two tries of rate/2)
  int max_prompt = 40;
  int max_new_tokens = 30;
  double cancel_rate = 0.01;    // per step, one random live request
  double deadline_share = 0.2;  // requests with a deadline 1..200 steps out
  double stop_rate = 0.02;      // per sampled token (EOS, stop string)
};

struct SimulationTotals {
  int accepted = 0, rejected_full = 0, rejected_too_big = 0;
  int finished = 0, stopped = 0, cancelled = 0, expired = 0, dropped_while_running = 0;
  int preemptions = 0, preempted_then_finished = 0;
  int steps_mixing_prefill_and_decode = 0;
};

// Drives a Scheduler as the engine loop would, with the test's own model of
// every sequence, and checks the invariants after every call.
class Simulation {
 public:
  Simulation(const SimulationConfig& config, uint32_t seed)
      : config_(config), rng_(seed), scheduler_(MakeScheduler(config.options)) {}

  SimulationTotals Run() {
    int step = 0;
    for (; step < config_.arrival_steps || !live_.empty(); ++step) {
      if (step > config_.arrival_steps + 100000) {
        ADD_FAILURE() << "did not drain: " << live_.size() << " live";
        break;
      }
      now_ = kT0 + absl::Milliseconds(step);
      if (step < config_.arrival_steps) {
        for (int i = 0; i < 2; ++i) MaybeArrive(config_.arrival_rate / 2);
        MaybeCancel();
      }
      const StepPlan plan = scheduler_->Schedule(now_);
      CheckPlan(plan);
      if (::testing::Test::HasFailure()) break;
      CompleteStep(plan);
      if (::testing::Test::HasFailure()) break;
    }
    const SchedulerStats stats = scheduler_->Stats();
    EXPECT_EQ(stats.running + stats.waiting, 0);
    EXPECT_EQ(stats.kv_blocks_used, 0);
    EXPECT_EQ(totals_.accepted, totals_.finished + totals_.cancelled + totals_.expired);
    return totals_;
  }

 private:
  struct Tracked {
    int prompt = 0, max_tokens = 0;
    int computed = 0, generated = 0;
    absl::Time deadline = absl::InfiniteFuture();
    bool cancelled = false;
    bool queued = true;  // waiting (new or preempted), not in running
    bool preempted_once = false;
    int known() const { return prompt + generated; }
    bool decoding() const { return !queued && generated > 0 && computed == known() - 1; }
  };

  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  int prefill_limit() const {
    const SchedulerOptions& o = config_.options;
    return o.prefill_chunk == 0 ? o.max_num_tokens : o.prefill_chunk;
  }

  void MaybeArrive(double p) {
    if (!Chance(p)) return;
    Tracked t;
    t.prompt = Uniform(1, config_.max_prompt);
    t.max_tokens = Uniform(1, config_.max_new_tokens);
    if (Chance(config_.deadline_share)) t.deadline = now_ + absl::Milliseconds(Uniform(1, 200));
    const uint64_t id = next_id_++;
    const SchedulerOptions& o = config_.options;
    const bool too_big = t.prompt + t.max_tokens > o.num_blocks * o.block_size;
    const bool queue_full = scheduler_->Stats().waiting >= o.max_queue;
    const absl::Status s = scheduler_->Enqueue(Request(id, t.prompt, t.max_tokens, t.deadline));
    if (too_big) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      ++totals_.rejected_too_big;
    } else if (queue_full) {
      EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
      ++totals_.rejected_full;
    } else {
      ASSERT_TRUE(s.ok()) << s;
      live_[id] = t;
      ++totals_.accepted;
    }
  }

  void MaybeCancel() {
    if (live_.empty() || !Chance(config_.cancel_rate)) return;
    auto it = std::next(live_.begin(), Uniform(0, static_cast<int>(live_.size()) - 1));
    ASSERT_TRUE(scheduler_->Cancel(it->first).ok());
    it->second.cancelled = true;
  }

  void CheckPlan(const StepPlan& plan) {
    const SchedulerOptions& o = config_.options;
    ASSERT_LE(static_cast<int>(plan.chunks.size()), o.max_batch_size);
    ASSERT_LE(plan.num_tokens(), o.max_num_tokens);

    absl::flat_hash_set<uint64_t> left;  // dropped or preempted in this call
    for (const DroppedSequence& d : plan.dropped) {
      auto it = live_.find(d.id);
      ASSERT_NE(it, live_.end()) << "dropped twice or unknown: " << d.id;
      const Tracked& t = it->second;
      if (t.cancelled) {
        EXPECT_EQ(d.reason, DropReason::kCancelled);
        ++totals_.cancelled;
      } else {
        EXPECT_EQ(d.reason, DropReason::kDeadlineExceeded);
        EXPECT_GE(now_, t.deadline);
        ++totals_.expired;
      }
      if (!t.queued) ++totals_.dropped_while_running;
      EXPECT_EQ(scheduler_->Find(d.id), nullptr);
      left.insert(d.id);
      live_.erase(it);
    }
    for (const auto& [id, t] : live_) {  // nothing that should have been dropped stays
      EXPECT_FALSE(t.cancelled) << id;
      EXPECT_LT(now_, t.deadline) << id;
    }
    for (uint64_t id : plan.preempted) {
      Tracked& t = live_.at(id);
      ASSERT_FALSE(t.queued) << "preempted while waiting: " << id;
      const SequenceState* seq = scheduler_->Find(id);
      ASSERT_NE(seq, nullptr);
      EXPECT_EQ(seq->state, RequestState::kPreempted);
      EXPECT_THAT(scheduler_.kv->blocks(id), IsEmpty());
      t.computed = 0;
      t.queued = true;
      t.preempted_once = true;
      left.insert(id);
      ++totals_.preemptions;
    }

    // Every decoding sequence decodes unless it left in this call.
    absl::flat_hash_set<uint64_t> must_decode;
    for (const auto& [id, t] : live_) {
      if (t.decoding() && !left.contains(id)) must_decode.insert(id);
    }
    bool has_prefill = false, has_decode = false;
    absl::flat_hash_set<uint64_t> in_plan;
    absl::flat_hash_set<KvBlockId> blocks_in_plan;
    for (const StepChunk& c : plan.chunks) {
      ASSERT_TRUE(in_plan.insert(c.id).second) << "two chunks for " << c.id;
      ASSERT_EQ(live_.count(c.id), 1u) << c.id;
      Tracked& t = live_.at(c.id);
      if (t.queued) {  // admission: nobody who arrived earlier still waits
        for (const auto& [other_id, other] : live_) {
          EXPECT_FALSE(other.queued && other_id < c.id) << c.id << " admitted before " << other_id;
        }
        t.queued = false;
      }
      const int end = c.first_position + c.num_tokens;
      EXPECT_EQ(c.first_position, t.computed) << c.id;
      EXPECT_GE(c.num_tokens, 1);
      EXPECT_LE(end, t.known());
      EXPECT_EQ(c.wants_logits, end == t.known());
      EXPECT_EQ(c.is_prefill, !t.decoding());
      if (c.is_prefill) {
        EXPECT_LE(c.num_tokens, prefill_limit());
      } else {
        EXPECT_EQ(c.num_tokens, 1);
        must_decode.erase(c.id);
      }
      has_prefill |= c.is_prefill;
      has_decode |= !c.is_prefill;
      const SequenceState* seq = scheduler_->Find(c.id);
      EXPECT_EQ(seq->state, RequestState::kRunning);
      const KvCacheManager& kv = *scheduler_.kv;
      EXPECT_GE(kv.num_tokens(c.id), end);
      EXPECT_EQ(static_cast<int>(kv.blocks(c.id).size()), kv.BlocksNeeded(kv.num_tokens(c.id)));
      // The chunk carries the sequence's block table for the model, whose
      // chunks must write disjoint blocks; the token ids are the engine's.
      EXPECT_TRUE(c.blocks == kv.blocks(c.id)) << c.id;
      for (KvBlockId block : c.blocks) {
        EXPECT_TRUE(blocks_in_plan.insert(block).second) << "block " << block << " twice";
      }
      EXPECT_EQ(c.token_ids, nullptr);
    }
    EXPECT_THAT(must_decode, IsEmpty()) << "running decodes were stalled";
    if (has_prefill && has_decode) ++totals_.steps_mixing_prefill_and_decode;
    CheckAccounting();
  }

  void CompleteStep(const StepPlan& plan) {
    std::vector<uint64_t> stopped, expected_finished;
    for (const StepChunk& c : plan.chunks) {
      Tracked& t = live_.at(c.id);
      t.computed += c.num_tokens;
      if (!c.wants_logits) continue;
      ++t.generated;
      const bool stop = t.generated < t.max_tokens && Chance(config_.stop_rate);
      if (stop) stopped.push_back(c.id);
      if (stop || t.generated == t.max_tokens) expected_finished.push_back(c.id);
    }
    absl::StatusOr<std::vector<uint64_t>> finished = scheduler_->OnStepDone(plan, stopped);
    ASSERT_TRUE(finished.ok()) << finished.status();
    EXPECT_EQ(*finished, expected_finished);
    totals_.stopped += static_cast<int>(stopped.size());
    for (uint64_t id : expected_finished) {
      if (live_.at(id).preempted_once) ++totals_.preempted_then_finished;
      EXPECT_EQ(scheduler_->Find(id), nullptr);
      live_.erase(id);
      ++totals_.finished;
    }
    for (const auto& [id, t] : live_) {
      EXPECT_EQ(scheduler_->Find(id)->num_computed, t.computed) << id;
      EXPECT_EQ(scheduler_->Find(id)->num_generated, t.generated) << id;
    }
    CheckAccounting();
  }

  // The pool's used blocks are exactly the blocks in live tables, and only
  // running sequences hold blocks; the running and waiting counts match the
  // test's model.
  void CheckAccounting() {
    int blocks_in_tables = 0, running = 0;
    for (const auto& [id, t] : live_) {
      const SequenceState* seq = scheduler_->Find(id);
      ASSERT_NE(seq, nullptr) << id;
      const int blocks = static_cast<int>(scheduler_.kv->blocks(id).size());
      blocks_in_tables += blocks;
      if (t.queued) {
        EXPECT_EQ(blocks, 0) << id;
      }
      running += t.queued ? 0 : 1;
    }
    const SchedulerStats stats = scheduler_->Stats();
    EXPECT_EQ(stats.kv_blocks_used, blocks_in_tables);
    EXPECT_EQ(scheduler_.kv->num_sequences(), running);
    EXPECT_EQ(stats.kv_blocks_total, config_.options.num_blocks);
    EXPECT_EQ(stats.running, running);
    EXPECT_EQ(stats.waiting, static_cast<int>(live_.size()) - running);
  }

  SimulationConfig config_;
  std::mt19937 rng_;
  TestScheduler scheduler_;
  absl::Time now_ = kT0;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Tracked> live_;  // ordered by id = arrival order
  SimulationTotals totals_;
};

constexpr uint32_t kSeeds[] = {1, 2, 3, 4, 5};

TEST(SchedulerSimulationTest, RoomyPoolMixesChunkedPrefillsWithDecodes) {
  SimulationConfig c;
  c.options = Options(/*max_batch_size=*/8, /*max_num_tokens=*/24, /*block_size=*/4,
                      /*num_blocks=*/400, /*prefill_chunk=*/16);
  c.max_prompt = 60;
  for (uint32_t seed : kSeeds) {
    const SimulationTotals t = Simulation(c, seed).Run();
    ASSERT_FALSE(HasFailure()) << "seed " << seed;
    EXPECT_EQ(t.preemptions, 0) << "seed " << seed;
    EXPECT_GT(t.steps_mixing_prefill_and_decode, 100) << "seed " << seed;
    EXPECT_GT(t.finished, 300) << "seed " << seed;
    EXPECT_GT(t.stopped, 0) << "seed " << seed;
    EXPECT_GT(t.cancelled, 0) << "seed " << seed;
    EXPECT_GT(t.expired, 0) << "seed " << seed;
    EXPECT_GT(t.dropped_while_running, 0) << "seed " << seed;
  }
}

TEST(SchedulerSimulationTest, ScarceBlocksPreemptAndEveryoneStillFinishes) {
  SimulationConfig c;
  c.options = Options(/*max_batch_size=*/8, /*max_num_tokens=*/32, /*block_size=*/4,
                      /*num_blocks=*/24, /*prefill_chunk=*/8);
  c.max_prompt = 40;
  c.max_new_tokens = 60;  // some requests exceed the pool and are rejected
  c.deadline_share = 0.05;
  for (uint32_t seed : kSeeds) {
    const SimulationTotals t = Simulation(c, seed).Run();
    ASSERT_FALSE(HasFailure()) << "seed " << seed;
    EXPECT_GT(t.preemptions, 20) << "seed " << seed;
    EXPECT_GT(t.preempted_then_finished, 5) << "seed " << seed;
    EXPECT_GT(t.rejected_too_big, 0) << "seed " << seed;
  }
}

TEST(SchedulerSimulationTest, TightTokenBudgetAndSingleTokenBlocks) {
  SimulationConfig c;
  c.options = Options(/*max_batch_size=*/6, /*max_num_tokens=*/6, /*block_size=*/1,
                      /*num_blocks=*/90, /*prefill_chunk=*/0);
  c.arrival_rate = 0.3;
  for (uint32_t seed : kSeeds) {
    const SimulationTotals t = Simulation(c, seed).Run();
    ASSERT_FALSE(HasFailure()) << "seed " << seed;
    EXPECT_GT(t.finished, 100) << "seed " << seed;
  }
}

TEST(SchedulerSimulationTest, OverloadFillsTheQueueAndRejectsWithResourceExhausted) {
  SimulationConfig c;
  c.options = Options(/*max_batch_size=*/4, /*max_num_tokens=*/16, /*block_size=*/8,
                      /*num_blocks=*/20, /*prefill_chunk=*/8);
  c.options.max_queue = 10;
  c.arrival_rate = 1.5;
  c.arrival_steps = 600;
  for (uint32_t seed : kSeeds) {
    const SimulationTotals t = Simulation(c, seed).Run();
    ASSERT_FALSE(HasFailure()) << "seed " << seed;
    EXPECT_GT(t.rejected_full, 50) << "seed " << seed;
  }
}

}  // namespace
}  // namespace memserve
