// StepChunk: a sequence's tokens in one engine step, the one record that
// goes from the scheduler (which plans it) through the engine (which adds the
// token ids) to the model (Model::ForwardBatch, which computes it). Plain
// data; no model or scheduler dependency.
#ifndef MEMSERVE_ENGINE_STEP_CHUNK_H_
#define MEMSERVE_ENGINE_STEP_CHUNK_H_

#include <cstdint>

#include "absl/types/span.h"
#include "engine/kv_cache.h"

namespace memserve {

// Tokens at positions [first_position, first_position + num_tokens) of one
// sequence. Their K/V go to the sequence's blocks; attention reads positions
// [0, first_position) from the same blocks (written by earlier steps).
//
// Who fills what: the scheduler sets everything but token_ids and
// all_logits; the engine sets token_ids; a caller of the model without a
// scheduler (tests, benchmarks, parity) sets what the model reads, most
// simply with ForTokens. The model reads first_position, num_tokens,
// token_ids, blocks, wants_logits and all_logits.
struct StepChunk {
  uint64_t id = 0;                     // the sequence (the scheduler's id); the model ignores it
  int first_position = 0;              // >= 0
  int num_tokens = 0;                  // >= 1
  bool is_prefill = false;             // (re)computing the prompt; false for a decode token
  bool wants_logits = false;           // produce the logits of the last token (the
                                       // chunk ends at the last known token: sample the next one)
  bool all_logits = false;             // produce the logits of every token instead
                                       // (Model::Forward's mode; the scheduler never sets it)
  absl::Span<const KvBlockId> blocks;  // the sequence's block table; covers
                                       // [0, first_position + num_tokens)
  const int* token_ids = nullptr;      // [num_tokens] the tokens' ids; not
                                       // owned, valid for the model call

  absl::Span<const int> tokens() const {
    return absl::Span<const int>(token_ids, static_cast<size_t>(num_tokens));
  }
  // The position after the chunk's last token.
  int end_position() const { return first_position + num_tokens; }

  // A chunk of `tokens` (not copied: they must outlive the model call) at
  // first_position, with the sequence's block table `blocks`.
  static StepChunk ForTokens(absl::Span<const int> tokens, int first_position,
                             absl::Span<const KvBlockId> blocks, bool wants_logits) {
    StepChunk chunk;
    chunk.first_position = first_position;
    chunk.num_tokens = static_cast<int>(tokens.size());
    chunk.token_ids = tokens.data();
    chunk.blocks = blocks;
    chunk.wants_logits = wants_logits;
    return chunk;
  }
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_STEP_CHUNK_H_
