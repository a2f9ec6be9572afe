// Model: the memory-augmented Llama forward pass (docs/model.md) over a
// Backend, with weights used in place from the checkpoint mapping.
#ifndef MEMSERVE_ENGINE_MODEL_H_
#define MEMSERVE_ENGINE_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend/backend.h"
#include "engine/config.h"
#include "engine/kv_cache.h"
#include "engine/weights.h"

namespace memserve {

struct ModelOptions {
  int num_threads = 0;  // CPU threads for the ops; 0 = one per hardware thread
};

// Key/value storage for every layer: per layer, K and V arrays of
// [num_blocks, block_size, n_kv_heads * head_dim] fp32 (PagedKvLayout). A
// cache from NewCache holds one sequence in one block of `capacity` tokens
// and tracks its length (Forward); one from NewPagedCache holds many
// sequences whose block tables the caller keeps (ForwardBatch). Valid only
// with the Model that created it (and not after that model is destroyed).
class KvCache {
 public:
  // Single-sequence caches: tokens stored (the position of the next token).
  int length() const { return length_; }
  int capacity() const { return layout_.num_blocks * layout_.block_size; }
  // Forgets all tokens; the next Forward starts at position 0.
  void Clear() { length_ = 0; }
  const PagedKvLayout& layout() const { return layout_; }

 private:
  friend class Model;
  KvCache(const void* owner, int n_layers, const PagedKvLayout& layout);
  float* keys(int layer) { return k_.get() + layer * layout_.floats_per_layer(); }
  float* values(int layer) { return v_.get() + layer * layout_.floats_per_layer(); }

  const void* owner_;
  PagedKvLayout layout_;
  int length_ = 0;
  std::unique_ptr<float[]> k_;  // [n_layers, num_blocks, block_size, kv_dim]
  std::unique_ptr<float[]> v_;
};

// Part of one sequence in a batched step (Model::ForwardBatch): `tokens` at
// positions first_position, first_position + 1, ..., whose K/V go to the
// sequence's blocks; attention reads positions [0, first_position) from the
// same blocks (written by earlier steps).
struct BatchChunk {
  absl::Span<const int> tokens;        // >= 1 token
  int first_position = 0;              // >= 0
  absl::Span<const KvBlockId> blocks;  // the sequence's block table; covers
                                       // [0, first_position + tokens.size())
  bool wants_logits = false;           // produce the logits of the last token
};

// What one memory layer read, for parity tests: for every token and head the
// knn value rows sorted by score descending (ties: smaller row first) and
// their pre-softmax scores (s1[a] + s2[b]).
struct MemoryTrace {
  int layer = 0;
  int tokens = 0;
  int heads = 0;
  int knn = 0;
  std::vector<int64_t> indices;  // [tokens, heads, knn]
  std::vector<float> scores;     // [tokens, heads, knn]
};

// Thread-safety: Load and config() are safe from any thread. NewCache may be
// called concurrently with anything. Forward must be called from one thread
// at a time (it reuses internal activation buffers), whatever the cache.
class Model {
 public:
  // Reads `<dir>/config.json` and the checkpoint tensors. Every tensor the
  // config implies is checked by name and shape (errors name the tensor and
  // file); a tensor the config does not use is an error naming it.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir,
                                                     const ModelOptions& options = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  // Bytes of the memory value table(s) in the checkpoint (0 without memory).
  int64_t value_table_bytes() const;

  // A cache for one sequence of up to `capacity` tokens, clamped to
  // [1, max_seqlen].
  std::unique_ptr<KvCache> NewCache(int capacity) const;

  // Block storage for many sequences (ForwardBatch). InvalidArgument naming
  // the field when layout.Validate() fails; ResourceExhausted when the
  // storage cannot be allocated (names the bytes asked for).
  absl::StatusOr<std::unique_ptr<KvCache>> NewPagedCache(const PagedKvLayout& layout) const;
  // Bytes NewPagedCache allocates per block (K and V of every layer).
  int64_t KvBytesPerBlock(int block_size) const;

  // Appends `tokens` to the sequence in `cache` (positions cache->length()
  // onward) and writes the logits of the last token ([vocab]) to `logits`, or
  // of every token ([tokens.size(), vocab]) when `all_logits`. When `trace` is
  // not null it is replaced with one MemoryTrace per memory layer, in layer
  // order, covering the tokens of this call.
  // Errors (InvalidArgument, naming the limit; the cache is unchanged): empty
  // `tokens`, an id outside [0, vocab_size), positions beyond the cache
  // capacity or max_seqlen, a cache from another model or a paged one, null
  // cache/logits.
  absl::Status Forward(KvCache* cache, absl::Span<const int> tokens, bool all_logits,
                       std::vector<float>* logits, std::vector<MemoryTrace>* trace = nullptr);

  // One step of many sequences as one batch: every op runs over the tokens of
  // all chunks together, except attention, which each chunk runs over its own
  // blocks. `logits` becomes [number of chunks with wants_logits, vocab], in
  // chunk order. Each token's result is bit-identical to computing its
  // sequence alone (Forward): no op mixes tokens, and every op's arithmetic
  // per token is independent of the batch.
  // REQUIRES: chunks write disjoint (block, offset) slots.
  // Errors (InvalidArgument naming chunks[i] and the limit; nothing is
  // computed): empty tokens, ids outside the vocabulary, positions beyond
  // max_seqlen, block tables too short or with ids outside the cache, a
  // cache from another model, null arguments.
  absl::Status ForwardBatch(KvCache* cache, absl::Span<const BatchChunk> chunks,
                            std::vector<float>* logits);

 private:
  struct Layer;
  struct Scratch;
  Model();

  absl::Status LoadWeights(const std::string& dir);
  // Tokens of one sequence run through the layers in one pass.
  struct Piece {
    enum class Logits { kNone, kLast, kAll };
    absl::Span<const int> tokens;
    int start = 0;                      // position of tokens[0]
    const KvBlockId* blocks = nullptr;  // block table covering start + tokens.size()
    Logits logits = Logits::kNone;
  };
  // Runs the pieces (<= kMaxChunk tokens in all) through every layer and
  // writes their logits rows, in piece order, to `logits`.
  void RunPieces(KvCache* cache, absl::Span<const Piece> pieces, float* logits,
                 std::vector<MemoryTrace>* trace);
  void EnsureRope(int positions);

  ModelConfig config_;
  std::unique_ptr<WeightStore> store_;
  std::unique_ptr<Backend> backend_;
  TensorView tok_embeddings_, norm_, output_;
  std::vector<Layer> layers_;
  std::vector<TensorView> value_tables_;  // one (shared) or one per memory layer
  RopeTable rope_;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_MODEL_H_
