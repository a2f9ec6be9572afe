// Model: the memory-augmented Llama forward pass (docs/model.md) over a
// Backend the caller chooses. At load the backend decides where each weight
// lives (PlaceWeight: the CPU packs matmul weights, a device copies them);
// the memory value tables stay in the checkpoint mapping (WrapHostMemory).
// Activations, the K/V cache, the step's batch descriptor and the RoPE table
// are backend buffers; the model moves bytes only through Upload/Download
// (one logits download per pass) and never dereferences them.
#ifndef MEMSERVE_ENGINE_MODEL_H_
#define MEMSERVE_ENGINE_MODEL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend/backend.h"
#include "engine/batch_descriptor.h"
#include "engine/config.h"
#include "engine/dtype.h"
#include "engine/kv_cache.h"
#include "engine/runtime/memory_pool.h"
#include "engine/runtime/placement_plan.h"
#include "engine/runtime/tensor.h"
#include "engine/step_chunk.h"
#include "engine/weights.h"

namespace memserve {

struct ModelOptions {
  int num_threads = 0;    // LoadCpuModel's CPU threads; 0 = one per hardware thread
  int memory_shards = 1;  // column shards of the memory value tables (MemoryPool);
                          // the results do not depend on it
  // Element type of the K/V caches the model makes: F32, or BF16 on a
  // backend whose WriteKv/Attention take it (CUDA; --kv_cache_dtype,
  // ResolveKvCacheDtype in engine/backend_factory.h).
  DType kv_cache_dtype = DType::kF32;
  // Decode steps as step graphs (Backend::CaptureStep) on a backend that
  // has them; no effect on the CPU.
  bool step_graphs = true;
  // Where the memory value tables go (--memory_placement). Unset: where
  // the backend puts any weight (PlaceWeight: the mapping on the CPU, a
  // device copy on a GPU) in memory_shards column shards. Set: called once
  // every tensor is checked, with the sizes filled in (table_bytes,
  // table_columns, dense_bytes; LoadModel completes the rest and plans); the
  // plan's host placement uses Backend::PlaceHostTable, device PlaceWeight,
  // sharded Backend::PlaceShardedTables over AssignMemoryShards(plan,
  // memory_shards). Its error fails the load. Not called without memory layers.
  std::function<absl::StatusOr<PlacementPlan>(const PlacementRequest& sizes)> plan_memory;
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

// What the memory layers read during one Forward / ForwardBatch, for
// metrics (Engine StepStats).
struct MemoryReadStats {
  // Wall time of the memory lookups (MemorySelect + the ValueGathers), all
  // memory layers and passes. A device backend whose ops are asynchronous
  // is waited for only when distinct rows are counted (the row ids are
  // downloaded); otherwise this is the time to issue the ops. Decode steps
  // replayed as step graphs add their rows_read only (no time, no
  // distinct-row sample).
  double seconds = 0;
  int64_t rows_read = 0;  // value rows gathered: tokens x heads x knn per memory layer
  // With count_distinct_rows on: rows whose ids were checked, and the
  // distinct ids among them (per memory layer and pass), so
  // distinct_rows / rows_sampled is the fraction of distinct rows read.
  int64_t rows_sampled = 0;
  int64_t distinct_rows = 0;
};

// Thread-safety: Load and config() are safe from any thread. NewCache may be
// called concurrently with anything. Forward and ForwardBatch must be called
// from one thread at a time (they reuse the activation buffers and the
// backend), whatever the cache.
class Model {
 public:
  // Reads `<dir>/config.json` and the checkpoint tensors and places each
  // weight on `backend` (Backend::PlaceWeight). Every tensor the config
  // implies is checked by name and shape (errors name the tensor and file);
  // a tensor the config does not use is an error naming it.
  // REQUIRES: `backend` outlives the model and every cache it creates.
  // InvalidArgument naming memory_shards unless it is in [1, 64].
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir, Backend& backend,
                                                     const ModelOptions& options = {});
  // The same, the model owning `backend`.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir,
                                                     std::unique_ptr<Backend> backend,
                                                     const ModelOptions& options = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  // Bytes of the memory value table(s) in the checkpoint (0 without memory).
  int64_t value_table_bytes() const;

  Backend& backend() const { return *backend_; }
  // The memory value tables, their placement and shards.
  const MemoryPool& memory_pool() const { return memory_; }

  // A cache for one sequence of up to `capacity` tokens, clamped to
  // [1, max_seqlen]; null when the backend cannot allocate it.
  std::unique_ptr<KvCache> NewCache(int capacity) const;

  // The element type of the caches it makes (ModelOptions::kv_cache_dtype).
  DType kv_cache_dtype() const { return kv_dtype_; }

  // Block storage for many sequences (ForwardBatch). InvalidArgument naming
  // the field when layout.Validate() fails; ResourceExhausted when the
  // storage cannot be allocated (names the bytes asked for).
  absl::StatusOr<std::unique_ptr<KvCache>> NewPagedCache(const PagedKvLayout& layout) const;
  // Bytes NewPagedCache allocates per block (K and V of every layer, in
  // kv_cache_dtype()).
  int64_t KvBytesPerBlock(int block_size) const;

  // Appends `tokens` to the sequence in `cache` (positions cache->length()
  // onward) and writes the logits of the last token ([vocab]) to `logits`, or
  // of every token ([tokens.size(), vocab]) when `all_logits`. When `trace` is
  // not null it is replaced with one MemoryTrace per memory layer, in layer
  // order, covering the tokens of this call.
  // Errors (InvalidArgument, naming the limit; the cache is unchanged): empty
  // `tokens`, an id outside [0, vocab_size), positions beyond the cache
  // capacity or max_seqlen, a cache from another model or a paged one, null
  // cache/logits. A backend failure is returned as is (the cache's length
  // then counts only the passes that finished).
  // This is ForwardBatch with one chunk over the cache's single block.
  absl::Status Forward(KvCache* cache, absl::Span<const int> tokens, bool all_logits,
                       std::vector<float>* logits, std::vector<MemoryTrace>* trace = nullptr);

  // One step of many sequences as one batch, one StepChunk per sequence (the
  // model reads its positions, token ids, block table and logits flags):
  // every op runs over the tokens of all chunks together, attention over each chunk's own blocks.
  // `logits` becomes [rows, vocab] in chunk order: per chunk, one row per token with all_logits,
  // else one row with wants_logits, else none. Each token's result is bit-identical to computing
  // its sequence alone (on the CPU backend; a device backend's GEMMs may round a row differently
  // with the batch's size, within its op tolerance): no op mixes tokens, and every op's arithmetic
  // per token is independent of the batch. `trace`, when not null, is replaced as described at
  // Forward. REQUIRES: chunks write disjoint (block, offset) slots. Errors (InvalidArgument naming
  // chunks[i] and the limit; nothing is computed): num_tokens < 1, null token_ids, ids outside the
  // vocabulary, positions beyond max_seqlen, block tables too short or with ids outside the cache,
  // a cache from another model, null arguments. A backend failure (e.g. Internal from a device) is
  // returned as is; the K/V written by the step is then unspecified.
  absl::Status ForwardBatch(KvCache* cache, absl::Span<const StepChunk> chunks,
                            std::vector<float>* logits, std::vector<MemoryTrace>* trace = nullptr);

  // What the memory layers read in the latest Forward / ForwardBatch (reset
  // by each call; same thread as those calls).
  const MemoryReadStats& memory_read_stats() const { return memory_read_; }
  // Whether the next calls count distinct rows (MemoryReadStats): it
  // downloads the selected row ids of every memory layer and pass, so
  // callers turn it on for a sample of the steps. Off by default.
  void set_count_distinct_rows(bool on) { count_distinct_rows_ = on; }

 private:
  struct Layer;
  struct Scratch;
  struct DecodeGraph;
  Model();

  absl::Status LoadWeights(const std::string& dir, const ModelOptions& options);
  // Validated chunks, cut into passes of at most kMaxChunk tokens; with
  // `advance_length` (Forward), the cache's length counts each finished pass.
  absl::Status Run(KvCache* cache, absl::Span<const StepChunk> chunks, std::vector<float>* logits,
                   std::vector<MemoryTrace>* trace, bool advance_length);
  // Runs the chunks of one pass (<= kMaxChunk tokens in all) through every
  // layer and downloads their logits rows, in chunk order, to `logits`. A
  // decode pass runs as a step graph when the backend has them
  // (RunDecodeGraph); every other pass runs its ops one by one.
  absl::Status RunPass(KvCache* cache, absl::Span<const StepChunk> pass, float* logits,
                       std::vector<MemoryTrace>* trace);
  // A decode pass padded to `bucket` sequences (engine/batch_descriptor.h):
  // the bucket's descriptor uploaded, its graph replayed (captured after an
  // eager run the first time, per bucket and cache), the real logits rows
  // downloaded.
  absl::Status RunDecodeGraph(KvCache* cache, absl::Span<const StepChunk> pass, int bucket,
                              float* logits);
  // Uploads `host` into `buffer` and points *batch at it.
  absl::Status UploadBatch(const HostBatch& host, const PagedKvLayout& layout, Buffer* buffer,
                           BatchDescriptor* batch);
  // Every layer's ops over `batch`, then the logits of `logit_rows` (token
  // rows, in order) into the logits buffer's first rows. Ops only (no
  // Upload/Download) unless `trace` is not null, so it can be captured.
  absl::Status RunLayers(KvCache* cache, const BatchDescriptor& batch,
                         absl::Span<const int64_t> logit_rows, std::vector<MemoryTrace>* trace);
  // The RoPE table covers `positions` positions (grown and re-uploaded).
  absl::Status EnsureRope(int positions);
  // The activation buffer holds `tokens` tokens (grown when needed).
  absl::Status EnsureCapacity(int64_t tokens);
  // A buffer of at least `bytes` bytes in *buffer (grown when needed).
  absl::Status EnsureBuffer(std::unique_ptr<Buffer>* buffer, size_t bytes);

  ModelConfig config_;
  std::unique_ptr<Backend> owned_backend_;  // destroyed after every buffer
  Backend* backend_ = nullptr;
  std::unique_ptr<WeightStore> store_;
  std::vector<std::unique_ptr<Buffer>> weight_buffers_;
  Tensor tok_embeddings_, norm_, output_;
  std::vector<Layer> layers_;
  std::vector<Tensor> value_tables_;  // one (shared) or one per memory layer, as placed
  MemoryPool memory_;                 // the same tables, with their shards
  int rope_positions_ = 0;
  std::unique_ptr<Buffer> rope_buffer_;  // F32 [2, rope_positions_, head_dim / 2]
  Tensor rope_;
  std::unique_ptr<Scratch> scratch_;
  MemoryReadStats memory_read_;
  bool count_distinct_rows_ = false;
  bool capturing_ = false;  // inside Backend::CaptureStep: ops are recorded, not run
  DType kv_dtype_ = DType::kF32;
  bool step_graphs_ = false;  // options.step_graphs and the backend has them
  // Decode-step graphs by batch-size bucket (destroyed before the backend).
  std::map<int, std::unique_ptr<DecodeGraph>> decode_graphs_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_MODEL_H_
