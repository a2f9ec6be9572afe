// Model: the memory-augmented Llama forward pass (MODEL_SPEC.md) over a
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
#include "engine/backend.h"
#include "engine/config.h"
#include "engine/weights.h"

namespace memserve {

struct ModelOptions {
  int num_threads = 0;  // CPU threads for the ops; 0 = one per hardware thread
};

// The keys and values of one sequence for every layer, contiguous per layer
// ([capacity, n_kv_heads, head_dim] fp32), with a fixed capacity. Created by
// Model::NewCache; valid only with the Model that created it (and not after
// that model is destroyed).
class KvCache {
 public:
  // Tokens stored (the position of the next token).
  int length() const { return length_; }
  int capacity() const { return capacity_; }
  // Forgets all tokens; the next Forward starts at position 0.
  void Clear() { length_ = 0; }

 private:
  friend class Model;
  KvCache(const void* owner, int n_layers, int capacity, int64_t kv_dim);
  float* keys(int layer) { return k_.get() + static_cast<int64_t>(layer) * capacity_ * kv_dim_; }
  float* values(int layer) { return v_.get() + static_cast<int64_t>(layer) * capacity_ * kv_dim_; }

  const void* owner_;
  int n_layers_;
  int capacity_;
  int64_t kv_dim_;
  int length_ = 0;
  std::unique_ptr<float[]> k_;  // [n_layers, capacity, kv_dim]
  std::unique_ptr<float[]> v_;
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

  // A cache for one sequence of up to `capacity` tokens, clamped to
  // [1, max_seqlen].
  std::unique_ptr<KvCache> NewCache(int capacity) const;

  // Appends `tokens` to the sequence in `cache` (positions cache->length()
  // onward) and writes the logits of the last token ([vocab]) to `logits`, or
  // of every token ([tokens.size(), vocab]) when `all_logits`. When `trace` is
  // not null it is replaced with one MemoryTrace per memory layer, in layer
  // order, covering the tokens of this call.
  // Errors (InvalidArgument, naming the limit; the cache is unchanged): empty
  // `tokens`, an id outside [0, vocab_size), positions beyond the cache
  // capacity or max_seqlen, a cache from another model, null cache/logits.
  absl::Status Forward(KvCache* cache, absl::Span<const int> tokens, bool all_logits,
                       std::vector<float>* logits, std::vector<MemoryTrace>* trace = nullptr);

 private:
  struct Layer;
  struct Scratch;
  Model();

  absl::Status LoadWeights(const std::string& dir);
  // Runs tokens at positions start.. through all layers; chunk <= kMaxChunk.
  void ForwardChunk(KvCache* cache, absl::Span<const int> tokens, int start, bool all_logits,
                    float* logits, std::vector<MemoryTrace>* trace);
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
