// Request state shared by the scheduler and the engine loop: what the
// scheduler knows about one sequence (lengths, progress, deadline). Its KV
// blocks are in the KvCacheManager; model inputs, sampling and text stay in
// the engine loop's own per-request struct; both keyed by the same id.
#ifndef MEMSERVE_ENGINE_REQUEST_H_
#define MEMSERVE_ENGINE_REQUEST_H_

#include <cstdint>

#include "absl/time/time.h"

namespace memserve {

// Lifecycle of a sequence, in chronological order, so "has reached state X"
// is `state >= X`. One exception: a preempted sequence returns to kRunning
// when it is admitted again.
enum class RequestState {
  kWaiting,    // queued, never admitted
  kRunning,    // admitted: holds KV blocks and takes part in steps
  kPreempted,  // blocks taken back; queued again to recompute from position 0
  kFinished,   // ended (done, stopped, cancelled or expired); holds nothing
};

// A new sequence as submitted to the scheduler.
struct SequenceRequest {
  uint64_t id = 0;                               // unique among live sequences
  int prompt_tokens = 0;                         // >= 1
  int max_tokens = 0;                            // tokens to generate at most, >= 1
  absl::Time deadline = absl::InfiniteFuture();  // InfiniteFuture() = none
};

// The scheduler's view of one sequence. Its tokens are the prompt followed
// by the generated tokens, known_tokens() in all; num_computed of them have
// their K/V in the cache.
struct SequenceState {
  SequenceState(const SequenceRequest& request, int64_t arrival)
      : request(request), arrival(arrival) {}

  int known_tokens() const { return request.prompt_tokens + num_generated; }
  // Decoding: everything but the last sampled token is computed, so each step
  // feeds exactly that token. Otherwise the sequence is (re)computing its
  // prompt, which after a preemption includes the tokens it generated.
  bool is_decoding() const { return num_generated > 0 && num_computed == known_tokens() - 1; }

  SequenceRequest request;
  int64_t arrival;  // Enqueue order: smaller arrived earlier
  int num_computed = 0;
  int num_generated = 0;
  bool cancelled = false;
  RequestState state = RequestState::kWaiting;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_REQUEST_H_
