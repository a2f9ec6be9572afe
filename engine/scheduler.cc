#include "engine/scheduler.h"

#include <algorithm>
#include <cassert>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

absl::Status AtLeast(const char* flag, int value, int limit) {
  if (value >= limit) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " must be >= ", limit, ", got ", value));
}

std::optional<DropReason> ReasonToDrop(const SequenceState& seq, absl::Time now) {
  if (seq.cancelled) return DropReason::kCancelled;
  if (now >= seq.request.deadline) return DropReason::kDeadlineExceeded;
  return std::nullopt;
}

}  // namespace

absl::Status SchedulerOptions::Validate() const {
  RETURN_IF_ERROR(AtLeast("max_batch_size", max_batch_size, 1));
  RETURN_IF_ERROR(AtLeast("max_num_tokens", max_num_tokens, 1));
  RETURN_IF_ERROR(AtLeast("max_queue", max_queue, 1));
  RETURN_IF_ERROR(AtLeast("block_size", block_size, 1));
  RETURN_IF_ERROR(AtLeast("num_blocks", num_blocks, 1));
  RETURN_IF_ERROR(AtLeast("prefill_chunk", prefill_chunk, 0));
  if (static_cast<int64_t>(num_blocks) * block_size > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--num_blocks x --block_size (", num_blocks, " x ", block_size,
                     ") must be <= ", std::numeric_limits<int>::max(), " tokens"));
  }
  if (max_num_tokens < max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_num_tokens must be >= --max_batch_size (", max_batch_size,
        ") so that every running sequence can decode in one step, got ", max_num_tokens));
  }
  return absl::OkStatus();
}

int StepPlan::num_tokens() const {
  int total = 0;
  for (const StepChunk& chunk : chunks) total += chunk.num_tokens;
  return total;
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& options,
                                                             KvCacheManager* kv_cache) {
  RETURN_IF_ERROR(options.Validate());
  if (kv_cache == nullptr) return absl::InvalidArgumentError("scheduler: the KV cache is null");
  if (kv_cache->num_blocks() != options.num_blocks ||
      kv_cache->block_size() != options.block_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("scheduler: the KV cache has ", kv_cache->num_blocks(), " blocks of ",
                     kv_cache->block_size(), " tokens, but --num_blocks=", options.num_blocks,
                     " and --block_size=", options.block_size));
  }
  return std::unique_ptr<Scheduler>(new Scheduler(options, kv_cache));
}

Scheduler::Scheduler(const SchedulerOptions& options, KvCacheManager* kv_cache)
    : options_(options), kv_(kv_cache) {}

int Scheduler::PromptChunk(const SequenceState& seq, int token_budget) const {
  const int limit = options_.prefill_chunk == 0 ? options_.max_num_tokens : options_.prefill_chunk;
  return std::min({seq.known_tokens() - seq.num_computed, limit, token_budget});
}

absl::Status Scheduler::Enqueue(const SequenceRequest& request) {
  if (request.prompt_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_tokens must be >= 1, got ", request.prompt_tokens));
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be >= 1, got ", request.max_tokens));
  }
  const int64_t pool_tokens = static_cast<int64_t>(options_.num_blocks) * options_.block_size;
  const int64_t needed = static_cast<int64_t>(request.prompt_tokens) + request.max_tokens;
  if (needed > pool_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt_tokens + max_tokens (", request.prompt_tokens, " + ", request.max_tokens, " = ",
        needed, ") exceeds the KV cache of ", pool_tokens, " tokens (--num_blocks=",
        options_.num_blocks, " x --block_size=", options_.block_size, ")"));
  }
  if (sequences_.contains(request.id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence id ", request.id, " is already live"));
  }
  if (static_cast<int64_t>(waiting_.size()) >= options_.max_queue) {
    return absl::ResourceExhaustedError(
        absl::StrCat("waiting queue is full (--max_queue=", options_.max_queue, ")"));
  }
  auto [it, inserted] = sequences_.try_emplace(request.id, request, next_arrival_++);
  waiting_.push_back(&it->second);
  return absl::OkStatus();
}

absl::Status Scheduler::Cancel(uint64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("no live sequence with id ", id));
  }
  it->second.cancelled = true;
  return absl::OkStatus();
}

StepPlan Scheduler::Schedule(absl::Time now) {
  StepPlan plan;
  DropEnded(now, &plan);
  int token_budget = options_.max_num_tokens;
  ScheduleRunning(&token_budget, &plan);
  // Blocks just taken back would otherwise go straight to a newcomer that the
  // next decode block would preempt again.
  if (plan.preempted.empty()) AdmitWaiting(&token_budget, &plan);
  return plan;
}

void Scheduler::DropEnded(absl::Time now, StepPlan* plan) {
  auto drop_if_ended = [&](SequenceState* seq) {
    const std::optional<DropReason> reason = ReasonToDrop(*seq, now);
    if (!reason.has_value()) return false;
    kv_->Release(seq->request.id);
    plan->dropped.push_back({seq->request.id, *reason});
    return true;
  };
  running_.erase(std::remove_if(running_.begin(), running_.end(), drop_if_ended), running_.end());
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), drop_if_ended), waiting_.end());
  for (const DroppedSequence& dropped : plan->dropped) sequences_.erase(dropped.id);
}

void Scheduler::ScheduleRunning(int* token_budget, StepPlan* plan) {
  // Tokens held back for the decodes not yet visited, so that a prompt chunk
  // never takes them. With FIFO admission this does not bind today (whatever
  // was admitted behind a prompt fit beside its chunk), but it keeps "decodes
  // first" true by construction rather than by admission history.
  int decodes_behind =
      static_cast<int>(std::count_if(running_.begin(), running_.end(),
                                     [](const SequenceState* seq) { return seq->is_decoding(); }));
  for (size_t i = 0; i < running_.size(); ++i) {
    SequenceState* seq = running_[i];
    const bool decoding = seq->is_decoding();
    if (decoding) --decodes_behind;
    const int wanted = decoding ? 1 : PromptChunk(*seq, *token_budget - decodes_behind);
    if (wanted <= 0) continue;  // a prompt chunk waits for a step with tokens to spare
    // Victims come from the back, so they were not scheduled yet in this step.
    while (ReservableTokens(*seq) < 1) {
      if (running_.back()->is_decoding() && running_.back() != seq) --decodes_behind;
      PreemptNewestRunning(plan);
      if (i == running_.size()) return;  // `seq` itself was the newest
    }
    const int num_tokens = std::min(wanted, ReservableTokens(*seq));
    AddChunk(seq, num_tokens, plan);
    *token_budget -= num_tokens;
  }
}

void Scheduler::AdmitWaiting(int* token_budget, StepPlan* plan) {
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_batch_size &&
         *token_budget > 0) {
    SequenceState* seq = waiting_.front();
    const int num_tokens = PromptChunk(*seq, *token_budget);
    // FIFO: when the head does not fit, nobody behind it overtakes.
    if (kv_->BlocksNeeded(num_tokens) > kv_->num_free()) return;
    waiting_.pop_front();
    running_.push_back(seq);
    seq->state = RequestState::kRunning;
    AddChunk(seq, num_tokens, plan);
    *token_budget -= num_tokens;
  }
}

void Scheduler::PreemptNewestRunning(StepPlan* plan) {
  SequenceState* seq = running_.back();
  running_.pop_back();
  kv_->Release(seq->request.id);
  seq->num_computed = 0;
  seq->state = RequestState::kPreempted;
  waiting_.push_front(seq);
  plan->preempted.push_back(seq->request.id);
}

void Scheduler::AddChunk(SequenceState* seq, int num_tokens, StepPlan* plan) {
  const int end = seq->num_computed + num_tokens;
  const absl::Status reserved = kv_->Reserve(seq->request.id, end);
  // Callers checked the free blocks first; a failure here is a scheduler bug.
  assert(reserved.ok());
  (void)reserved;
  StepChunk chunk;
  chunk.id = seq->request.id;
  chunk.first_position = seq->num_computed;
  chunk.num_tokens = num_tokens;
  chunk.is_prefill = !seq->is_decoding();
  chunk.wants_logits = end == seq->known_tokens();
  chunk.blocks = kv_->blocks(seq->request.id);
  plan->chunks.push_back(chunk);
}

int Scheduler::ReservableTokens(const SequenceState& seq) const {
  const int64_t blocks = static_cast<int64_t>(kv_->blocks(seq.request.id).size()) + kv_->num_free();
  return static_cast<int>(blocks * options_.block_size - seq.num_computed);
}

absl::StatusOr<std::vector<uint64_t>> Scheduler::OnStepDone(
    const StepPlan& plan, absl::Span<const uint64_t> stopped_ids) {
  absl::flat_hash_set<uint64_t> sampled;
  for (const StepChunk& chunk : plan.chunks) {
    const SequenceState* seq = Find(chunk.id);
    if (seq == nullptr || seq->state != RequestState::kRunning ||
        seq->num_computed != chunk.first_position ||
        chunk.end_position() > kv_->num_tokens(chunk.id)) {
      return absl::FailedPreconditionError(
          absl::StrCat("step plan does not match sequence ", chunk.id,
                       " (a plan applied twice, or not from the latest Schedule)"));
    }
    if (chunk.wants_logits) sampled.insert(chunk.id);
  }
  for (uint64_t id : stopped_ids) {
    if (!sampled.contains(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("stopped sequence ", id, " sampled no token in this step"));
    }
  }
  const absl::flat_hash_set<uint64_t> stopped(stopped_ids.begin(), stopped_ids.end());

  std::vector<uint64_t> finished;
  for (const StepChunk& chunk : plan.chunks) {
    SequenceState& seq = sequences_.at(chunk.id);
    seq.num_computed += chunk.num_tokens;
    if (!chunk.wants_logits) continue;
    ++seq.num_generated;
    if (seq.num_generated < seq.request.max_tokens && !stopped.contains(chunk.id)) continue;
    kv_->Release(chunk.id);
    seq.state = RequestState::kFinished;
    finished.push_back(chunk.id);
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const SequenceState* seq) {
                                  return seq->state == RequestState::kFinished;
                                }),
                 running_.end());
  for (uint64_t id : finished) sequences_.erase(id);
  return finished;
}

SchedulerStats Scheduler::Stats() const {
  SchedulerStats stats;
  stats.running = static_cast<int>(running_.size());
  stats.waiting = static_cast<int>(waiting_.size());
  stats.kv_blocks_used = kv_->num_used();
  stats.kv_blocks_total = kv_->num_blocks();
  return stats;
}

const SequenceState* Scheduler::Find(uint64_t id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : &it->second;
}

}  // namespace memserve
