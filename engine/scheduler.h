// Scheduler: decides what each engine step computes, as pure bookkeeping
// over request lists (no model, no threads), in the manner of vLLM and the
// TensorRT-LLM batch manager. It reserves and releases KV blocks through a
// KvCacheManager it borrows (which owns the pool, the block tables and the
// storage); the engine loop owns everything else.
//
// One engine step:
//   StepPlan plan = scheduler.Schedule(now);   // what to compute
//   ... set each chunk's token_ids, run the model on plan.chunks (one
//       StepChunk per sequence), sample where wants_logits ...
//   finished = scheduler.OnStepDone(plan, stopped_ids);
//
// Policy of Schedule, in order:
//  1. Drop cancelled and deadline-expired sequences, waiting or running;
//     their blocks are freed before the call returns.
//  2. Running sequences, in admission order: a decoding one computes its one
//     new token; one still (re)computing its prompt gets a chunk of
//     min(prefill_chunk, budget left after the tokens of the decodes behind
//     it). So a long prompt never stalls running decodes. When the KV pool
//     cannot hold even one more token of a sequence, the most recently
//     admitted running sequence is preempted (blocks freed, put back at the
//     front of the queue to recompute from position 0, its generated tokens
//     included), repeatedly, until the sequence fits or is itself the one
//     preempted. A prompt chunk shrinks to the blocks that are free.
//  3. Unless step 2 preempted, admit waiting sequences strictly in FIFO
//     order while the batch has room (max_batch_size sequences, running
//     ones included) and tokens are left; the head's first chunk must fit in
//     free blocks, otherwise nothing behind it is admitted either.
// Every request that passed Enqueue fits the pool alone, so the oldest
// running sequence always makes progress and every request finishes.
#ifndef MEMSERVE_ENGINE_SCHEDULER_H_
#define MEMSERVE_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/kv_cache.h"
#include "engine/request.h"
#include "engine/step_chunk.h"

namespace memserve {

// Error messages name the fields as the server flags of the same name
// (--max_batch_size, ...).
struct SchedulerOptions {
  int max_batch_size = 64;    // sequences in one step (and running at once)
  int max_num_tokens = 2048;  // tokens in one step, prompt chunks and decodes together
  int max_queue = 1024;       // waiting sequences; Enqueue beyond it fails
  int block_size = 16;        // tokens per KV block
  int num_blocks = 0;         // KV blocks in the pool; must be set
  int prefill_chunk = 0;      // prompt tokens per sequence per step; 0 = max_num_tokens

  // InvalidArgument naming the field and its limit: every field >= 1 except
  // prefill_chunk >= 0, num_blocks * block_size <= INT_MAX tokens, and
  // max_num_tokens >= max_batch_size (so every running decode fits in one step).
  absl::Status Validate() const;
};

enum class DropReason { kCancelled, kDeadlineExceeded };

struct DroppedSequence {
  uint64_t id = 0;
  DropReason reason = DropReason::kCancelled;
};

struct StepPlan {
  // Running sequences in admission order, then newly admitted ones. Every
  // field but token_ids and all_logits is set; the KV blocks of the chunk's
  // tokens are already reserved, and `blocks` (the sequence's block table)
  // stays valid until the next Schedule or OnStepDone (Enqueue and Cancel do
  // not move it).
  std::vector<StepChunk> chunks;
  // Removed by this Schedule call, blocks freed; these ids are now unknown.
  std::vector<DroppedSequence> dropped;
  // Moved back to the queue by this call, blocks freed: the engine must
  // discard their cached K/V (they recompute from position 0) but keep their
  // tokens.
  std::vector<uint64_t> preempted;

  int num_tokens() const;
};

struct SchedulerStats {
  int running = 0;  // admitted, holding KV blocks
  int waiting = 0;  // queued, preempted ones included
  int kv_blocks_used = 0;
  int kv_blocks_total = 0;
};

// Not thread-safe: the engine thread owns it (and guards it, with the
// KvCacheManager, by one mutex).
class Scheduler {
 public:
  // A scheduler that keeps the blocks of its sequences in `kv_cache`, by
  // sequence id. InvalidArgument when options.Validate() fails or
  // `kv_cache` is null or its num_blocks / block_size differ from the
  // options'. REQUIRES: `kv_cache` outlives the scheduler, holds no blocks,
  // and nothing else reserves or releases its blocks.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& options,
                                                           KvCacheManager* kv_cache);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a new sequence at the back. Errors, with nothing queued:
  //   InvalidArgument: prompt_tokens or max_tokens < 1, or prompt_tokens +
  //     max_tokens more than the whole KV pool holds (names the limit);
  //   AlreadyExists: the id is live;
  //   ResourceExhausted: max_queue sequences already wait (names --max_queue).
  absl::Status Enqueue(const SequenceRequest& request);

  // Marks a live sequence cancelled; the next Schedule drops it (and frees its
  // blocks). A step already planned still completes for it, and if the
  // sequence ends in that step OnStepDone reports it finished instead.
  // NotFound when the id is not live (unknown or already ended).
  absl::Status Cancel(uint64_t id);

  // Plans the next step (see the policy above). `now` is compared with the
  // deadlines. Never exceeds max_batch_size chunks, max_num_tokens tokens,
  // prefill_chunk tokens per prompt chunk, or the KV pool.
  StepPlan Schedule(absl::Time now);

  // Records that `plan`, the result of the latest Schedule, was computed:
  // every chunk advances its sequence, and each chunk with wants_logits
  // produced one token. A sequence ends when it reaches max_tokens or its id
  // is in `stopped_ids` (EOS, stop string); its blocks are freed and its id
  // is returned (in plan order) and forgotten.
  // Errors, with nothing changed: FailedPrecondition when the plan does not
  // match the current state (applied twice, or not the latest);
  // InvalidArgument when a stopped id had no wants_logits chunk in the plan.
  absl::StatusOr<std::vector<uint64_t>> OnStepDone(const StepPlan& plan,
                                                   absl::Span<const uint64_t> stopped_ids);

  SchedulerStats Stats() const;

  // The live sequence `id` (its block table is kv_cache()->blocks(id)), or
  // null. Valid until the next non-const call.
  const SequenceState* Find(uint64_t id) const;

  const SchedulerOptions& options() const { return options_; }
  const KvCacheManager* kv_cache() const { return kv_; }

 private:
  Scheduler(const SchedulerOptions& options, KvCacheManager* kv_cache);

  void DropEnded(absl::Time now, StepPlan* plan);
  void ScheduleRunning(int* token_budget, StepPlan* plan);
  void AdmitWaiting(int* token_budget, StepPlan* plan);
  // Frees the blocks of running_.back() and queues it at the front.
  void PreemptNewestRunning(StepPlan* plan);
  // Reserves blocks for `num_tokens` more tokens (REQUIRES: they fit) and
  // adds the chunk to the plan.
  void AddChunk(SequenceState* seq, int num_tokens, StepPlan* plan);
  // Tokens `seq` could still compute with its blocks and all free ones.
  int ReservableTokens(const SequenceState& seq) const;
  // Prompt tokens `seq` computes next, given the tokens left for it.
  int PromptChunk(const SequenceState& seq, int token_budget) const;

  const SchedulerOptions options_;
  KvCacheManager* const kv_;  // not owned
  int64_t next_arrival_ = 0;
  absl::node_hash_map<uint64_t, SequenceState> sequences_;  // every live sequence
  std::deque<SequenceState*> waiting_;                      // FIFO by arrival
  std::vector<SequenceState*> running_;                     // in admission order (= arrival order)
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_SCHEDULER_H_
