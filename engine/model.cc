#include "engine/model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/batch_descriptor.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

// Longest run of tokens pushed through the layers at once; longer calls are
// split (results are identical: every op treats tokens independently). Bounds
// the activation buffer at about kMaxChunk x (the sum of the layer widths)
// floats.
constexpr int kMaxChunk = 256;
// Rope rows computed up front; more are added when a sequence gets longer.
constexpr int kInitialRopePositions = 4096;

constexpr size_t AlignUp(size_t n) { return (n + 63) / 64 * 64; }

}  // namespace

struct Model::Layer {
  Tensor attention_norm, wq, wk, wv, wo, ffn_norm;
  bool memory = false;
  // Dense SwiGLU FFN.
  Tensor w1, w2, w3;
  // Memory layer.
  Tensor keys, query_w, query_b, swilu_w, swilu_b, value_proj_w, value_proj_b, gating_w, gating_b;
  int value_table = -1;  // index into value_tables_
};

// The activations of one pass, regions of one backend buffer sized for
// `capacity` tokens (grown to the largest pass seen, at most kMaxChunk), the
// logits rows, the step's batch descriptor (staged on the host, uploaded
// once per pass) and the memory-trace outputs.
struct Model::Scratch {
  // Activation regions, each [capacity, width] F32 at a 64-byte aligned offset.
  enum Region { kH, kXn, kQ, kK, kV, kAttn, kOut, kA, kB, kY, kGate, kRegions };
  int64_t widths[kRegions] = {};
  size_t offsets[kRegions] = {};
  int64_t capacity = 0;
  std::unique_ptr<Buffer> activations;
  std::unique_ptr<Buffer> logits;  // [capacity, vocab] F32
  std::unique_ptr<Buffer> batch;   // the BatchDescriptor's index tensors
  // MemorySelect's outputs: I64 rows, then F32 weights, then F32 scores
  // (traces only), each [capacity, heads, knn].
  std::unique_ptr<Buffer> select;

  // [T, width] view of region r (width: the region's, or narrower).
  Tensor View(Region r, int64_t tokens, int64_t width = 0) const {
    return Tensor::Of(activations.get(), DType::kF32, {tokens, width > 0 ? width : widths[r]},
                      offsets[r]);
  }

  // Host staging, reused across passes.
  std::vector<StepChunk> pass;      // the chunks of the pass being cut
  HostBatch host;                   // the pass's descriptor, uploaded at once
  std::vector<int64_t> trace_rows;  // the selected rows (traces, distinct-row counts)
  std::vector<float> trace_scores;
  std::vector<int64_t> sorted_rows;  // distinct-row counts
};

// A decode step captured as a step graph (Backend::CaptureStep) for one
// batch-size bucket over one cache: its own descriptor buffer (re-uploaded
// before every replay) and the graph.
struct Model::DecodeGraph {
  uint64_t cache_id = 0;
  std::unique_ptr<Buffer> descriptor;
  std::unique_ptr<Backend::StepGraph> graph;
};

Model::Model() = default;
Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir, Backend& backend,
                                                   const ModelOptions& options) {
  if (options.memory_shards < 1 || options.memory_shards > MemoryPool::kMaxShards) {
    return absl::InvalidArgumentError(absl::StrCat("memory_shards is ", options.memory_shards,
                                                   "; it must be in [1, ", MemoryPool::kMaxShards,
                                                   "]"));
  }
  if (options.kv_cache_dtype != DType::kF32 && options.kv_cache_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_cache_dtype is ", DTypeName(options.kv_cache_dtype), "; it must be F32 or BF16"));
  }
  std::unique_ptr<Model> model(new Model());
  model->backend_ = &backend;
  model->kv_dtype_ = options.kv_cache_dtype;
  model->step_graphs_ = options.step_graphs && backend.SupportsStepGraphs();
  ASSIGN_OR_RETURN(model->config_, ModelConfig::LoadFromDir(dir));
  ASSIGN_OR_RETURN(model->store_, WeightStore::Open(dir));
  RETURN_IF_ERROR(model->LoadWeights(dir, options));
  // A gather on other devices' streams cannot be recorded in a step graph.
  if (model->memory_.sharded() != nullptr && !model->memory_.sharded()->capturable()) {
    model->step_graphs_ = false;
  }
  const ModelConfig& c = model->config_;
  RETURN_IF_ERROR(model->EnsureRope(std::min(c.max_seqlen, kInitialRopePositions)));
  model->scratch_ = std::make_unique<Scratch>();
  Scratch& s = *model->scratch_;
  const MemoryConfig& m = c.memory;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  const int64_t mem_q_dim = static_cast<int64_t>(m.heads) * m.k_dim;
  s.widths[Scratch::kH] = c.dim;                                // residual stream
  s.widths[Scratch::kXn] = c.dim;                               // normed input of a block
  s.widths[Scratch::kQ] = q_dim;                                // [n_heads, head_dim]
  s.widths[Scratch::kK] = kv_dim;                               // new keys
  s.widths[Scratch::kV] = kv_dim;                               // new values
  s.widths[Scratch::kAttn] = q_dim;                             // attention output
  s.widths[Scratch::kOut] = std::max<int64_t>(c.dim, m.v_dim);  // block output
  s.widths[Scratch::kA] = std::max<int64_t>(c.ffn_hidden_dim, mem_q_dim);  // w1 x / queries
  s.widths[Scratch::kB] = std::max<int64_t>(c.ffn_hidden_dim, m.v_dim);    // w3 x / swilu
  s.widths[Scratch::kY] = std::max<int64_t>(1, m.v_dim);                   // memory read
  s.widths[Scratch::kGate] = 1;                                            // memory gate
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir,
                                                   std::unique_ptr<Backend> backend,
                                                   const ModelOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("Model::Load: null backend");
  Backend& b = *backend;
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Load(dir, b, options));
  model->owned_backend_ = std::move(backend);
  return model;
}

absl::Status Model::LoadWeights(const std::string& dir, const ModelOptions& options) {
  const ModelConfig& c = config_;
  const MemoryConfig& m = c.memory;
  // Invariants the forward pass relies on (config.cc validates them too).
  if (c.dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
      c.n_heads % c.n_kv_heads != 0 || c.head_dim <= 0 || c.head_dim % 2 != 0 ||
      c.vocab_size <= 0 || c.max_seqlen <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: unsupported shape dim=", c.dim, " n_layers=", c.n_layers,
                     " n_heads=", c.n_heads, " n_kv_heads=", c.n_kv_heads, " head_dim=", c.head_dim,
                     " vocab_size=", c.vocab_size, " max_seqlen=", c.max_seqlen));
  }
  if (!m.layers.empty()) {
    if (m.n_keys <= 0 || m.heads <= 0 || m.knn <= 0 || m.knn > m.n_keys || m.k_dim <= 0 ||
        m.k_dim % 2 != 0 || m.v_dim <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: unsupported memory shape n_keys=", m.n_keys,
                       " heads=", m.heads, " knn=", m.knn, " k_dim=", m.k_dim, " v_dim=", m.v_dim));
    }
    if (m.swilu_projection && !m.value_proj) {
      return absl::InvalidArgumentError(
          "config.json: memory.swilu_projection requires memory.value_proj");
    }
    if (!m.value_proj && m.v_dim != c.dim) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: memory.v_dim=", m.v_dim,
                                                     " differs from dim=", c.dim,
                                                     " but memory.value_proj is false"));
    }
  }

  // Every tensor is checked first; then the backend places each one (so a
  // bad checkpoint fails before any weight is packed or copied).
  struct Pending {
    TensorView view;
    WeightUse use;
    Tensor* tensor;
  };
  std::vector<Pending> pending;
  std::set<std::string> expected;
  auto get = [&](Tensor* tensor, const std::string& name, std::vector<int64_t> shape,
                 WeightUse use = WeightUse::kOther) -> absl::Status {
    expected.insert(name);
    ASSIGN_OR_RETURN(TensorView view, store_->Get(name, shape));
    if (view.dtype == DType::kI8) {
      // An int8 matmul weight comes with its block scales (converter --dtype int8).
      if (use != WeightUse::kMatMul || shape.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat(
            "checkpoint ", dir, ": tensor ", name, " is I8; only matmul weights may be int8"));
      }
      if (shape[1] % kInt8BlockSize != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("checkpoint ", dir, ": tensor ", name, " is I8 with ", shape[1],
                         " columns; int8 weights need a multiple of ", kInt8BlockSize));
      }
      const std::string scale_name = name + kInt8ScaleSuffix;
      expected.insert(scale_name);
      ASSIGN_OR_RETURN(TensorView scales,
                       store_->Get(scale_name, {shape[0], shape[1] / kInt8BlockSize}));
      if (scales.dtype != DType::kF32) {
        return absl::InvalidArgumentError(absl::StrCat("checkpoint ", dir, ": tensor ", scale_name,
                                                       " is ", DTypeName(scales.dtype),
                                                       "; int8 block scales must be F32"));
      }
      view.scales = static_cast<const float*>(scales.data);
    }
    pending.push_back(Pending{std::move(view), use, tensor});
    return absl::OkStatus();
  };
  constexpr WeightUse kMatMul = WeightUse::kMatMul;
  const int64_t dim = c.dim;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  RETURN_IF_ERROR(get(&tok_embeddings_, "tok_embeddings.weight", {c.vocab_size, dim}));
  RETURN_IF_ERROR(get(&norm_, "norm.weight", {dim}));
  RETURN_IF_ERROR(get(&output_, "output.weight", {c.vocab_size, dim}, kMatMul));

  const int64_t rows = m.rows();
  int memory_layers = 0;
  for (int i = 0; i < c.n_layers; ++i) memory_layers += c.IsMemoryLayer(i) ? 1 : 0;
  value_tables_.resize(memory_layers == 0 ? 0 : m.share_values ? 1 : memory_layers);
  if (memory_layers > 0 && m.share_values) {
    RETURN_IF_ERROR(get(&value_tables_[0], "memory.values.weight", {rows, m.v_dim}));
  }
  int next_table = m.share_values ? 1 : 0;
  layers_.resize(c.n_layers);
  for (int i = 0; i < c.n_layers; ++i) {
    Layer& l = layers_[i];
    const std::string p = absl::StrCat("layers.", i, ".");
    RETURN_IF_ERROR(get(&l.attention_norm, p + "attention_norm.weight", {dim}));
    RETURN_IF_ERROR(get(&l.ffn_norm, p + "ffn_norm.weight", {dim}));
    RETURN_IF_ERROR(get(&l.wq, p + "attention.wq.weight", {q_dim, dim}, kMatMul));
    RETURN_IF_ERROR(get(&l.wk, p + "attention.wk.weight", {kv_dim, dim}, kMatMul));
    RETURN_IF_ERROR(get(&l.wv, p + "attention.wv.weight", {kv_dim, dim}, kMatMul));
    RETURN_IF_ERROR(get(&l.wo, p + "attention.wo.weight", {dim, q_dim}, kMatMul));
    const std::string f = p + "feed_forward.";
    l.memory = c.IsMemoryLayer(i);
    if (!l.memory) {
      const int64_t hidden = c.ffn_hidden_dim;
      RETURN_IF_ERROR(get(&l.w1, f + "w1.weight", {hidden, dim}, kMatMul));
      RETURN_IF_ERROR(get(&l.w2, f + "w2.weight", {dim, hidden}, kMatMul));
      RETURN_IF_ERROR(get(&l.w3, f + "w3.weight", {hidden, dim}, kMatMul));
      continue;
    }
    const int64_t qk = static_cast<int64_t>(m.heads) * m.k_dim;
    RETURN_IF_ERROR(get(&l.keys, f + "keys", {2LL * m.heads * m.n_keys, m.k_dim / 2}));
    RETURN_IF_ERROR(get(&l.query_w, f + "query_proj.query_mlps.0.weight", {qk, dim}, kMatMul));
    RETURN_IF_ERROR(get(&l.query_b, f + "query_proj.query_mlps.0.bias", {qk}));
    if (m.swilu_projection) {
      RETURN_IF_ERROR(get(&l.swilu_w, f + "swilu_projection.weight", {m.v_dim, dim}, kMatMul));
      RETURN_IF_ERROR(get(&l.swilu_b, f + "swilu_projection.bias", {m.v_dim}));
    }
    if (m.value_proj) {
      RETURN_IF_ERROR(get(&l.value_proj_w, f + "value_proj.weight", {dim, m.v_dim}, kMatMul));
      RETURN_IF_ERROR(get(&l.value_proj_b, f + "value_proj.bias", {dim}));
    }
    if (m.gated) {
      RETURN_IF_ERROR(get(&l.gating_w, f + "gating.weight", {1, dim}, kMatMul));
      RETURN_IF_ERROR(get(&l.gating_b, f + "gating.bias", {1}));
    }
    if (m.share_values) {
      l.value_table = 0;
    } else {
      l.value_table = next_table++;
      RETURN_IF_ERROR(get(&value_tables_[l.value_table], f + "values.weight", {rows, m.v_dim}));
    }
  }

  std::vector<std::string> unexpected;
  for (const std::string& name : store_->Names()) {
    if (expected.count(name) == 0) unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    constexpr size_t kMaxListed = 10;
    const size_t listed = std::min(unexpected.size(), kMaxListed);
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", dir, " has ", unexpected.size(),
        " tensor(s) that its config.json does not use: ",
        absl::StrJoin(unexpected.begin(), unexpected.begin() + listed, ", "),
        unexpected.size() > listed ? ", ..." : "",
        " (check memory.layers, memory.share_values, swilu_projection, value_proj, gated)"));
  }
  // Where the value tables go: the plan (options.plan_memory) once their
  // sizes are known, before anything is placed.
  auto is_table = [&](const Pending& p) {
    for (const Tensor& t : value_tables_) {
      if (p.tensor == &t) return true;
    }
    return false;
  };
  std::optional<PlacementPlan> plan;
  int64_t table_bytes = 0;
  if (options.plan_memory && !value_tables_.empty()) {
    PlacementRequest sizes;
    for (const Pending& p : pending) {
      (is_table(p) ? table_bytes : sizes.dense_bytes) += static_cast<int64_t>(p.view.nbytes());
    }
    sizes.table_bytes = table_bytes;
    sizes.table_columns = m.v_dim;
    ASSIGN_OR_RETURN(plan, options.plan_memory(sizes));
  }
  const MemoryPlacement placement = plan ? plan->placement : MemoryPlacement::kAuto;
  std::vector<TensorView> sharded_views;
  for (Pending& p : pending) {
    const bool table = is_table(p);
    if (table && placement == MemoryPlacement::kSharded) {
      sharded_views.push_back(p.view);
      continue;
    }
    absl::StatusOr<std::unique_ptr<Buffer>> buffer =
        table && placement == MemoryPlacement::kHost
            ? backend_->PlaceHostTable(p.view, p.tensor)
            : backend_->PlaceWeight(p.view, p.use, p.tensor);
    if (!buffer.ok()) {
      return absl::Status(buffer.status().code(),
                          absl::StrCat("placing ", p.view.name, " on the ", backend_->name(),
                                       " backend: ", buffer.status().message()));
    }
    weight_buffers_.push_back(*std::move(buffer));
  }
  std::vector<MemoryPool::Table> tables;
  for (const Tensor& t : value_tables_) {
    MemoryPool::Table table;
    table.tensor = t;
    for (const Pending& p : pending) {
      if (p.tensor == &t) {
        table.host = p.view.data;
        table.host_bytes = p.view.nbytes();
        table.rows = p.view.shape[0];
        table.columns = p.view.shape[1];
        table.elem_bytes = DTypeSize(p.view.dtype);
      }
    }
    tables.push_back(table);
  }
  if (placement == MemoryPlacement::kSharded) {
    std::vector<MemoryShard> shards;
    for (const PlacedShard& s :
         AssignMemoryShards(*plan, options.memory_shards, table_bytes, m.v_dim)) {
      shards.push_back(MemoryShard{backend_->device(), s.gpu, s.col_begin, s.col_end});
    }
    absl::StatusOr<std::unique_ptr<ShardedMemory>> sharded =
        backend_->PlaceShardedTables(sharded_views, shards);
    if (!sharded.ok()) {
      return absl::Status(sharded.status().code(),
                          absl::StrCat("placing the memory value tables on the ", backend_->name(),
                                       " backend: ", sharded.status().message()));
    }
    ASSIGN_OR_RETURN(memory_, MemoryPool::CreateSharded(std::move(tables), std::move(shards),
                                                        *std::move(sharded)));
  } else {
    ASSIGN_OR_RETURN(
        memory_, MemoryPool::Create(std::move(tables), options.memory_shards, backend_->device()));
    if (placement == MemoryPlacement::kHost && backend_->device() != Device::kCpu) {
      memory_.set_placement(MemoryPlacement::kHost, {DeviceBytes{"host", memory_.bytes()}});
    }
  }
  if (plan) memory_.set_summary(plan->Summary());
  return absl::OkStatus();
}

int64_t Model::value_table_bytes() const { return memory_.bytes(); }

std::unique_ptr<KvCache> Model::NewCache(int capacity) const {
  PagedKvLayout layout;
  layout.block_size = std::max(1, std::min(capacity, config_.max_seqlen));
  layout.num_blocks = 1;
  layout.kv_dim = static_cast<int64_t>(config_.n_kv_heads) * config_.head_dim;
  absl::StatusOr<std::unique_ptr<KvCache>> cache = NewPagedCache(layout);
  return cache.ok() ? *std::move(cache) : nullptr;
}

int64_t Model::KvBytesPerBlock(int block_size) const {
  return 2LL * config_.n_layers * block_size * config_.n_kv_heads * config_.head_dim *
         static_cast<int64_t>(DTypeSize(kv_dtype_));
}

absl::StatusOr<std::unique_ptr<KvCache>> Model::NewPagedCache(const PagedKvLayout& layout) const {
  RETURN_IF_ERROR(layout.Validate());
  const int64_t kv_dim = static_cast<int64_t>(config_.n_kv_heads) * config_.head_dim;
  if (layout.kv_dim != kv_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV layout kv_dim is ", layout.kv_dim, "; the model's n_kv_heads * head_dim is ", kv_dim));
  }
  const int64_t bytes = KvBytesPerBlock(layout.block_size) * layout.num_blocks;
  // Not zeroed: positions are written (WriteKv) before they are read.
  const size_t half = static_cast<size_t>(bytes / 2);
  absl::StatusOr<std::unique_ptr<Buffer>> k = backend_->AllocateBuffer(half);
  absl::StatusOr<std::unique_ptr<Buffer>> v = k.ok() ? backend_->AllocateBuffer(half) : k.status();
  if (!k.ok() || !v.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate the KV cache: ", layout.num_blocks, " blocks x ", layout.block_size,
        " tokens = ", bytes,
        " bytes (lower --num_blocks): ", (k.ok() ? v.status() : k.status()).message()));
  }
  return std::unique_ptr<KvCache>(
      new KvCache(this, layout, kv_dtype_, *std::move(k), *std::move(v)));
}

absl::Status Model::EnsureBuffer(std::unique_ptr<Buffer>* buffer, size_t bytes) {
  if (*buffer != nullptr && (*buffer)->size() >= bytes) return absl::OkStatus();
  const size_t grown = std::max(bytes, *buffer != nullptr ? 2 * (*buffer)->size() : size_t{0});
  buffer->reset();
  ASSIGN_OR_RETURN(*buffer, backend_->AllocateBuffer(grown));
  return absl::OkStatus();
}

absl::Status Model::EnsureRope(int positions) {
  if (positions <= rope_positions_) return absl::OkStatus();
  int n = std::max(positions, 2 * rope_positions_);
  n = std::min(n, config_.max_seqlen);
  const RopeTable table = RopeTable::Make(config_.head_dim, n, config_.rope_theta);
  const int64_t half = config_.head_dim / 2;
  std::vector<float> both(table.cos);
  both.insert(both.end(), table.sin.begin(), table.sin.end());
  decode_graphs_.clear();  // they read the old table
  RETURN_IF_ERROR(EnsureBuffer(&rope_buffer_, both.size() * sizeof(float)));
  const Tensor rope = Tensor::Of(rope_buffer_.get(), DType::kF32, {2, n, half});
  RETURN_IF_ERROR(backend_->Upload(both.data(), rope));
  rope_ = rope;
  rope_positions_ = n;
  return absl::OkStatus();
}

absl::Status Model::EnsureCapacity(int64_t tokens) {
  Scratch& s = *scratch_;
  if (tokens <= s.capacity) return absl::OkStatus();
  int64_t capacity = 1;
  while (capacity < tokens) capacity *= 2;
  capacity = std::min<int64_t>(std::max<int64_t>(capacity, tokens), kMaxChunk);
  capacity = std::max(capacity, tokens);
  size_t bytes = 0;
  for (int r = 0; r < Scratch::kRegions; ++r) {
    s.offsets[r] = bytes;
    bytes += AlignUp(static_cast<size_t>(capacity * s.widths[r]) * sizeof(float));
  }
  decode_graphs_.clear();  // they use the old buffers
  s.activations.reset();
  ASSIGN_OR_RETURN(s.activations, backend_->AllocateBuffer(bytes));
  s.logits.reset();
  ASSIGN_OR_RETURN(s.logits, backend_->AllocateBuffer(static_cast<size_t>(capacity) *
                                                      config_.vocab_size * sizeof(float)));
  const int64_t picks = static_cast<int64_t>(config_.memory.heads) * config_.memory.knn;
  s.select.reset();
  if (memory_.num_tables() > 0) {
    ASSIGN_OR_RETURN(s.select,
                     backend_->AllocateBuffer(static_cast<size_t>(capacity * picks) * 16));
  }
  s.capacity = capacity;
  return absl::OkStatus();
}

absl::Status Model::Forward(KvCache* cache, absl::Span<const int> tokens, bool all_logits,
                            std::vector<float>* logits, std::vector<MemoryTrace>* trace) {
  if (cache == nullptr || logits == nullptr) {
    return absl::InvalidArgumentError("Forward: cache and logits must not be null");
  }
  if (cache->owner_ != this) {
    return absl::InvalidArgumentError("Forward: the KV cache was created by another model");
  }
  if (cache->layout().num_blocks != 1) {
    return absl::InvalidArgumentError(
        "Forward: the KV cache is paged (NewPagedCache); use ForwardBatch or a NewCache cache");
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError("Forward: tokens is empty (at least 1 token is required)");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
  }
  const int64_t start = cache->length();
  const int64_t end = start + static_cast<int64_t>(tokens.size());
  if (end > cache->capacity()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence of ", end, " tokens (", start, " cached + ", tokens.size(),
                     " new) exceeds the KV cache capacity of ", cache->capacity(), " tokens"));
  }
  if (end > config_.max_seqlen) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence of ", end, " tokens exceeds the model's max_seqlen of ", config_.max_seqlen));
  }

  const KvBlockId block0 = 0;  // a single-sequence cache is one block
  StepChunk chunk = StepChunk::ForTokens(tokens, static_cast<int>(start),
                                         absl::MakeConstSpan(&block0, 1), !all_logits);
  chunk.all_logits = all_logits;
  return Run(cache, absl::MakeConstSpan(&chunk, 1), logits, trace, /*advance_length=*/true);
}

absl::Status Model::ForwardBatch(KvCache* cache, absl::Span<const StepChunk> chunks,
                                 std::vector<float>* logits, std::vector<MemoryTrace>* trace) {
  if (cache == nullptr || logits == nullptr) {
    return absl::InvalidArgumentError("ForwardBatch: cache and logits must not be null");
  }
  if (cache->owner_ != this) {
    return absl::InvalidArgumentError("ForwardBatch: the KV cache was created by another model");
  }
  const PagedKvLayout& layout = cache->layout();
  for (size_t i = 0; i < chunks.size(); ++i) {
    const StepChunk& c = chunks[i];
    if (c.num_tokens < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunks[", i, "]: tokens is empty (num_tokens is ", c.num_tokens, ")"));
    }
    if (c.token_ids == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("chunks[", i, "]: token_ids is null"));
    }
    const absl::Span<const int> tokens = c.tokens();
    for (size_t j = 0; j < tokens.size(); ++j) {
      if (tokens[j] < 0 || tokens[j] >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("chunks[", i, "]: token id ", tokens[j], " at index ", j,
                         " is outside the vocabulary [0, ", config_.vocab_size, ")"));
      }
    }
    const int64_t end = static_cast<int64_t>(c.first_position) + c.num_tokens;
    if (c.first_position < 0 || end > config_.max_seqlen) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunks[", i, "]: positions [", c.first_position, ", ", end,
                       ") are outside the model's context [0, ", config_.max_seqlen, ")"));
    }
    if (static_cast<int64_t>(c.blocks.size()) * layout.block_size < end) {
      return absl::InvalidArgumentError(absl::StrCat("chunks[", i, "]: ", c.blocks.size(),
                                                     " blocks of ", layout.block_size,
                                                     " tokens do not cover position ", end - 1));
    }
    for (size_t j = 0; j < c.blocks.size(); ++j) {
      if (c.blocks[j] < 0 || c.blocks[j] >= layout.num_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("chunks[", i, "]: blocks[", j, "] = ", c.blocks[j],
                         " is outside the cache [0, ", layout.num_blocks, ")"));
      }
    }
  }
  return Run(cache, chunks, logits, trace, /*advance_length=*/false);
}

absl::Status Model::Run(KvCache* cache, absl::Span<const StepChunk> chunks,
                        std::vector<float>* logits, std::vector<MemoryTrace>* trace,
                        bool advance_length) {
  int max_end = 0;
  int64_t n_logits = 0;
  for (const StepChunk& c : chunks) {
    max_end = std::max(max_end, c.end_position());
    n_logits += c.all_logits ? c.num_tokens : c.wants_logits ? 1 : 0;
  }
  RETURN_IF_ERROR(EnsureRope(max_end));
  const int64_t vocab = config_.vocab_size;
  logits->resize(static_cast<size_t>(n_logits * vocab));
  memory_read_ = MemoryReadStats{};
  if (trace != nullptr) {
    trace->clear();
    for (int i = 0; i < config_.n_layers; ++i) {
      if (!layers_[i].memory) continue;
      MemoryTrace t;
      t.layer = i;
      t.heads = config_.memory.heads;
      t.knn = config_.memory.knn;
      trace->push_back(std::move(t));
    }
  }

  // Cut the chunks into passes of at most kMaxChunk tokens; a chunk may be
  // split across passes (its later tokens then read the K/V its earlier
  // tokens wrote), which gives the same results.
  std::vector<StepChunk>& pass = scratch_->pass;
  pass.clear();
  int pass_tokens = 0;
  int64_t logits_before_pass = 0;  // logits rows written by earlier passes
  int64_t pass_logits = 0;
  auto flush = [&]() -> absl::Status {
    if (pass.empty()) return absl::OkStatus();
    RETURN_IF_ERROR(RunPass(cache, pass, logits->data() + logits_before_pass * vocab, trace));
    if (advance_length) {
      for (const StepChunk& p : pass) cache->length_ += p.num_tokens;
    }
    logits_before_pass += pass_logits;
    pass.clear();
    pass_tokens = 0;
    pass_logits = 0;
    return absl::OkStatus();
  };
  for (const StepChunk& c : chunks) {
    int done = 0;
    while (done < c.num_tokens) {
      if (pass_tokens == kMaxChunk) RETURN_IF_ERROR(flush());
      const int n = std::min(kMaxChunk - pass_tokens, c.num_tokens - done);
      StepChunk piece = c;
      piece.first_position = c.first_position + done;
      piece.num_tokens = n;
      piece.token_ids = c.token_ids + done;
      done += n;
      piece.wants_logits = !c.all_logits && c.wants_logits && done == c.num_tokens;
      pass_logits += piece.all_logits ? n : piece.wants_logits ? 1 : 0;
      pass.push_back(piece);
      pass_tokens += n;
    }
  }
  return flush();
}

absl::Status Model::RunPass(KvCache* cache, absl::Span<const StepChunk> pass, float* logits,
                            std::vector<MemoryTrace>* trace) {
  Scratch& s = *scratch_;
  const PagedKvLayout& layout = cache->layout();
  const int bucket = DecodeGraphBucket(static_cast<int>(pass.size()));
  if (step_graphs_ && trace == nullptr && bucket > 0 && IsDecodePass(pass)) {
    return RunDecodeGraph(cache, pass, bucket, logits);
  }
  int64_t T = 0;
  for (const StepChunk& p : pass) T += p.num_tokens;
  RETURN_IF_ERROR(EnsureCapacity(T));
  // --- the batch descriptor: built on the host, uploaded at once ---
  BuildHostBatch(pass, layout.block_size, /*pad_to_seqs=*/0, /*table_width=*/0, &s.host);
  RETURN_IF_ERROR(EnsureBuffer(&s.batch, s.host.bytes.size()));
  BatchDescriptor batch;
  RETURN_IF_ERROR(UploadBatch(s.host, layout, s.batch.get(), &batch));
  const int64_t rows = static_cast<int64_t>(s.host.logit_rows.size());
  RETURN_IF_ERROR(RunLayers(cache, batch, s.host.logit_rows, trace));
  if (rows == 0) return absl::OkStatus();
  return backend_->Download(Tensor::Of(s.logits.get(), DType::kF32, {rows, config_.vocab_size}),
                            logits);
}

absl::Status Model::RunDecodeGraph(KvCache* cache, absl::Span<const StepChunk> pass, int bucket,
                                   float* logits) {
  Scratch& s = *scratch_;
  const PagedKvLayout& layout = cache->layout();
  // Buffers a graph refers to must never move: size them for the largest
  // pass and the whole context before the first capture (growing them
  // later drops every graph).
  RETURN_IF_ERROR(EnsureRope(config_.max_seqlen));
  RETURN_IF_ERROR(EnsureCapacity(kMaxChunk));
  BuildHostBatch(pass, layout.block_size, /*pad_to_seqs=*/bucket,
                 DecodeGraphTableWidth(config_.max_seqlen, layout.block_size), &s.host);
  std::unique_ptr<DecodeGraph>& slot = decode_graphs_[bucket];
  if (slot == nullptr || slot->cache_id != cache->id() ||
      (slot->descriptor != nullptr && slot->descriptor->size() < s.host.bytes.size())) {
    slot = std::make_unique<DecodeGraph>();
    slot->cache_id = cache->id();
  }
  DecodeGraph& g = *slot;
  if (g.descriptor == nullptr) {
    ASSIGN_OR_RETURN(g.descriptor, backend_->AllocateBuffer(s.host.bytes.size()));
  }
  BatchDescriptor batch;
  RETURN_IF_ERROR(UploadBatch(s.host, layout, g.descriptor.get(), &batch));
  // Every row of the bucket gets logits (padding rows too: a fixed shape);
  // only the real ones are downloaded.
  std::vector<int64_t> rows(static_cast<size_t>(bucket));
  for (int r = 0; r < bucket; ++r) rows[r] = r;
  const auto ops = [&]() -> absl::Status { return RunLayers(cache, batch, rows, nullptr); };
  if (g.graph != nullptr) {
    RETURN_IF_ERROR(backend_->ReplayStep(*g.graph));
    // A replay runs no host code: count the rows it read here (its lookup
    // time is not measured, nor are its distinct rows).
    int memory_layers = 0;
    for (const Layer& l : layers_) memory_layers += l.memory ? 1 : 0;
    memory_read_.rows_read += static_cast<int64_t>(pass.size()) * config_.memory.heads *
                              config_.memory.knn * memory_layers;
  } else {
    // First time for this bucket: run it (this step's result, and every
    // scratch buffer sized), then record it for the next steps.
    RETURN_IF_ERROR(ops());
    capturing_ = true;
    absl::StatusOr<std::unique_ptr<Backend::StepGraph>> graph = backend_->CaptureStep(ops);
    capturing_ = false;
    if (!graph.ok()) {
      // Serve on without graphs rather than fail every decode step.
      std::fprintf(stderr, "memserve: step_graphs=off bucket=%d reason=\"%s\"\n", bucket,
                   std::string(graph.status().message()).c_str());
      step_graphs_ = false;
      decode_graphs_.clear();
    } else {
      g.graph = *std::move(graph);
    }
  }
  const int64_t n = static_cast<int64_t>(pass.size());
  return backend_->Download(Tensor::Of(s.logits.get(), DType::kF32, {n, config_.vocab_size}),
                            logits);
}

absl::Status Model::UploadBatch(const HostBatch& host, const PagedKvLayout& layout, Buffer* buffer,
                                BatchDescriptor* batch) {
  const int64_t T = host.n_tokens;
  RETURN_IF_ERROR(backend_->Upload(
      host.bytes.data(),
      Tensor::Of(buffer, DType::kI64, {static_cast<int64_t>(host.bytes.size() / 8)})));
  batch->n_tokens = T;
  batch->n_seqs = host.n_seqs;
  batch->block_size = layout.block_size;
  batch->max_blocks = host.max_blocks;
  batch->kv_rows = Tensor::Of(buffer, DType::kI64, {T}, host.offset_kv_rows);
  batch->token_ids = Tensor::Of(buffer, DType::kI32, {T}, host.offset_ids);
  batch->positions = Tensor::Of(buffer, DType::kI32, {T}, host.offset_positions);
  batch->seq_starts = Tensor::Of(buffer, DType::kI32, {host.n_seqs + 1}, host.offset_seq_starts);
  batch->block_tables =
      Tensor::Of(buffer, DType::kI32, {host.n_seqs, host.max_blocks}, host.offset_tables);
  return absl::OkStatus();
}

absl::Status Model::RunLayers(KvCache* cache, const BatchDescriptor& batch,
                              absl::Span<const int64_t> logit_rows,
                              std::vector<MemoryTrace>* trace) {
  const ModelConfig& c = config_;
  const MemoryConfig& m = c.memory;
  Backend& be = *backend_;
  Scratch& s = *scratch_;
  const int64_t T = batch.n_tokens;
  const int64_t dim = c.dim;
  AttentionShape attention;
  attention.n_heads = c.n_heads;
  attention.n_kv_heads = c.n_kv_heads;
  attention.head_dim = c.head_dim;
  attention.sliding_window = c.sliding_window;

  const Tensor h = s.View(Scratch::kH, T);    // [T, dim]
  const Tensor xn = s.View(Scratch::kXn, T);  // [T, dim]
  const Tensor q = s.View(Scratch::kQ, T);    // [T, n_heads * head_dim]
  const Tensor k = s.View(Scratch::kK, T);    // [T, kv_dim]
  const Tensor v = s.View(Scratch::kV, T);    // [T, kv_dim]
  const Tensor attn = s.View(Scratch::kAttn, T);
  const Tensor block_out = s.View(Scratch::kOut, T, dim);  // [T, dim]
  const Tensor q_heads = q.Reshaped({T, c.n_heads, c.head_dim});
  const Tensor k_heads = k.Reshaped({T, c.n_kv_heads, c.head_dim});
  const Tensor no_bias;
  RETURN_IF_ERROR(be.Embedding(tok_embeddings_, batch.token_ids, h));
  int memory_index = 0;
  for (int i = 0; i < c.n_layers; ++i) {
    const Layer& l = layers_[i];
    // --- attention block: h += wo(attention(rope(wq x), rope(wk x), wv x)) ---
    RETURN_IF_ERROR(be.RmsNorm(h, l.attention_norm, c.norm_eps, xn));
    RETURN_IF_ERROR(be.MatMul(xn, l.wq, no_bias, q));
    RETURN_IF_ERROR(be.MatMul(xn, l.wk, no_bias, k));
    RETURN_IF_ERROR(be.MatMul(xn, l.wv, no_bias, v));
    RETURN_IF_ERROR(be.Rope(q_heads, batch.positions, rope_));
    RETURN_IF_ERROR(be.Rope(k_heads, batch.positions, rope_));
    const Tensor k_cache = cache->keys(i);
    const Tensor v_cache = cache->values(i);
    RETURN_IF_ERROR(be.WriteKv(k, v, batch.kv_rows, k_cache, v_cache));
    RETURN_IF_ERROR(be.Attention(attention, batch, q, k_cache, v_cache, attn));
    RETURN_IF_ERROR(be.MatMul(attn, l.wo, no_bias, block_out));
    RETURN_IF_ERROR(be.Add(block_out, h));

    // --- feed-forward block: h += ffn(ffn_norm(h)) ---
    RETURN_IF_ERROR(be.RmsNorm(h, l.ffn_norm, c.norm_eps, xn));
    if (!l.memory) {
      const int64_t hidden = c.ffn_hidden_dim;
      const Tensor a = s.View(Scratch::kA, T, hidden);  // [T, hidden]
      const Tensor b = s.View(Scratch::kB, T, hidden);  // [T, hidden]
      RETURN_IF_ERROR(be.MatMul(xn, l.w1, no_bias, a));
      RETURN_IF_ERROR(be.MatMul(xn, l.w3, no_bias, b));
      RETURN_IF_ERROR(be.SwiGlu(a, b, a));
      RETURN_IF_ERROR(be.MatMul(a, l.w2, no_bias, block_out));
      RETURN_IF_ERROR(be.Add(block_out, h));
      continue;
    }
    const Tensor queries = s.View(Scratch::kA, T, static_cast<int64_t>(m.heads) * m.k_dim);
    const Tensor y = s.View(Scratch::kY, T, m.v_dim);  // [T, v_dim]
    RETURN_IF_ERROR(be.MatMul(xn, l.query_w, l.query_b, queries));
    // The memory read: select (replicated), then one gather per shard into
    // its columns of y.
    MemoryTrace* tr = trace != nullptr ? &(*trace)[memory_index] : nullptr;
    const size_t picks = static_cast<size_t>(T) * m.heads * m.knn;
    const size_t cap_picks = static_cast<size_t>(s.capacity) * m.heads * m.knn;
    MemorySelectArgs select;
    select.heads = m.heads;
    select.n_keys = m.n_keys;
    select.knn = m.knn;
    select.k_dim = m.k_dim;
    select.queries = queries;
    select.keys = l.keys;
    select.rows = Tensor::Of(s.select.get(), DType::kI64, {T, m.heads, m.knn});
    select.weights = Tensor::Of(s.select.get(), DType::kF32, {T, m.heads, m.knn}, cap_picks * 8);
    if (tr != nullptr) {
      select.scores = Tensor::Of(s.select.get(), DType::kF32, {T, m.heads, m.knn}, cap_picks * 12);
    }
    const absl::Time lookup_start = absl::Now();
    RETURN_IF_ERROR(be.MemorySelect(select));
    if (memory_.sharded() != nullptr) {
      RETURN_IF_ERROR(memory_.sharded()->Gather(l.value_table, select.rows, select.weights, y));
    } else {
      const Tensor& table = memory_.table(l.value_table);
      for (const MemoryShard& shard : memory_.shards()) {
        RETURN_IF_ERROR(
            be.ValueGather(table, select.rows, select.weights, shard.col_begin, shard.col_end, y));
      }
    }
    // While a step graph is captured nothing runs, and a download would
    // break the capture: no stats then (RunDecodeGraph counts its replays).
    const bool count_distinct = count_distinct_rows_ && !capturing_;
    if (tr != nullptr || count_distinct) {
      s.trace_rows.resize(picks);
      RETURN_IF_ERROR(be.Download(select.rows, s.trace_rows.data()));
    }
    if (!capturing_) {
      memory_read_.seconds += absl::ToDoubleSeconds(absl::Now() - lookup_start);
      memory_read_.rows_read += static_cast<int64_t>(picks);
    }
    if (count_distinct) {
      s.sorted_rows.assign(s.trace_rows.begin(), s.trace_rows.end());
      std::sort(s.sorted_rows.begin(), s.sorted_rows.end());
      memory_read_.rows_sampled += static_cast<int64_t>(picks);
      memory_read_.distinct_rows +=
          std::unique(s.sorted_rows.begin(), s.sorted_rows.end()) - s.sorted_rows.begin();
    }
    if (tr != nullptr) {
      s.trace_scores.resize(picks);
      RETURN_IF_ERROR(be.Download(select.scores, s.trace_scores.data()));
      tr->tokens += static_cast<int>(T);
      tr->indices.insert(tr->indices.end(), s.trace_rows.begin(), s.trace_rows.end());
      tr->scores.insert(tr->scores.end(), s.trace_scores.begin(), s.trace_scores.end());
    }
    ++memory_index;
    Tensor out = y;  // [T, dim] once projected
    if (m.swilu_projection) {
      const Tensor proj = s.View(Scratch::kB, T, m.v_dim);  // [T, v_dim]
      RETURN_IF_ERROR(be.MatMul(xn, l.swilu_w, l.swilu_b, proj));
      RETURN_IF_ERROR(be.SwiGlu(proj, y, y));  // y * silu(swilu_projection(x))
    }
    if (m.value_proj) {
      RETURN_IF_ERROR(be.MatMul(y, l.value_proj_w, l.value_proj_b, block_out));
      out = block_out;
    }
    if (m.gated) {
      const Tensor gate = s.View(Scratch::kGate, T);  // [T, 1]
      RETURN_IF_ERROR(be.MatMul(xn, l.gating_w, l.gating_b, gate));
      RETURN_IF_ERROR(be.SigmoidGateRows(gate, out));
    }
    RETURN_IF_ERROR(be.Add(out, h));
  }

  // --- output: logits = output(norm(h)) for the wanted rows, in order ---
  const int64_t rows = static_cast<int64_t>(logit_rows.size());
  if (rows == 0) return absl::OkStatus();
  bool leading = true;  // the rows are 0..rows-1: one RmsNorm over them
  for (int64_t r = 0; r < rows; ++r) leading = leading && logit_rows[r] == r;
  if (leading) {
    RETURN_IF_ERROR(be.RmsNorm(h.Rows(0, rows), norm_, c.norm_eps, xn.Rows(0, rows)));
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      RETURN_IF_ERROR(be.RmsNorm(h.Rows(logit_rows[r], 1), norm_, c.norm_eps, xn.Rows(r, 1)));
    }
  }
  const Tensor out_logits = Tensor::Of(s.logits.get(), DType::kF32, {rows, c.vocab_size});
  return be.MatMul(xn.Rows(0, rows), output_, no_bias, out_logits);
}

}  // namespace memserve
