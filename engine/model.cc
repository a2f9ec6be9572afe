#include "engine/model.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

// Longest run of tokens pushed through the layers at once; longer calls are
// split (results are identical: every op treats tokens independently). Bounds
// the activation buffers at about kMaxChunk x (the widest layer) floats.
constexpr int kMaxChunk = 256;
// Rope rows computed up front; more are added when a sequence gets longer.
constexpr int kInitialRopePositions = 4096;

}  // namespace

KvCache::KvCache(const void* owner, int n_layers, const PagedKvLayout& layout)
    : owner_(owner), layout_(layout) {
  const size_t n = static_cast<size_t>(n_layers) * layout.floats_per_layer();
  // Not zeroed: positions are written before they are read.
  k_.reset(new float[n]);
  v_.reset(new float[n]);
}

struct Model::Layer {
  TensorView attention_norm, wq, wk, wv, wo, ffn_norm;
  bool memory = false;
  // Dense SwiGLU FFN.
  TensorView w1, w2, w3;
  // Memory layer.
  TensorView keys, query_w, query_b, swilu_w, swilu_b, value_proj_w, value_proj_b, gating_w,
      gating_b;
  int value_table = -1;  // index into value_tables_
};

// Activation buffers, grown to the largest chunk seen and reused.
struct Model::Scratch {
  std::vector<float> h;     // [T, dim] residual stream
  std::vector<float> xn;    // [T, dim] normed input of a block
  std::vector<float> q;     // [T, n_heads * head_dim]
  std::vector<float> k;     // [T, kv_dim] new keys, before they go to their slots
  std::vector<float> v;     // [T, kv_dim] new values
  std::vector<float> attn;  // [T, n_heads * head_dim]
  std::vector<float> out;   // [T, dim] block output
  std::vector<float> a;     // [T, ffn_hidden] (dense) / [T, heads * k_dim] (memory queries)
  std::vector<float> b;     // [T, ffn_hidden] (dense) / [T, v_dim] (swilu projection)
  std::vector<float> y;     // [T, v_dim] memory read
  std::vector<float> gate;  // [T]
  std::vector<int32_t> positions;
  std::vector<int> ids;                  // [T] the pieces' tokens, concatenated
  std::vector<int64_t> slots;            // [T] cache row of each token
  std::vector<int64_t> logit_tokens;     // rows of h whose logits are wanted
  std::vector<AttentionArgs> attention;  // one per piece
  std::vector<int64_t> trace_rows;
  std::vector<float> trace_scores;
};

Model::Model() = default;
Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir,
                                                   const ModelOptions& options) {
  std::unique_ptr<Model> model(new Model());
  ASSIGN_OR_RETURN(model->config_, ModelConfig::LoadFromDir(dir));
  ASSIGN_OR_RETURN(model->store_, WeightStore::Open(dir));
  RETURN_IF_ERROR(model->LoadWeights(dir));
  const ModelConfig& c = model->config_;
  model->rope_ =
      RopeTable::Make(c.head_dim, std::min(c.max_seqlen, kInitialRopePositions), c.rope_theta);
  CpuBackend::Options backend_options;
  backend_options.num_threads = options.num_threads;
  model->backend_ = std::make_unique<CpuBackend>(backend_options);
  // Every weight Forward passes to MatMul (memory keys go through
  // MemoryLookup, the value tables are gathered: neither is prepared).
  std::vector<const TensorView*> matmul_weights = {&model->output_};
  for (const Layer& l : model->layers_) {
    for (const TensorView* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3, &l.query_w,
                                &l.swilu_w, &l.value_proj_w, &l.gating_w}) {
      if (w->data != nullptr) matmul_weights.push_back(w);
    }
  }
  model->backend_->PrepareMatMulWeights(matmul_weights);
  model->scratch_ = std::make_unique<Scratch>();
  return model;
}

absl::Status Model::LoadWeights(const std::string& dir) {
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

  std::set<std::string> expected;
  auto get = [&](const std::string& name,
                 std::vector<int64_t> shape) -> absl::StatusOr<TensorView> {
    expected.insert(name);
    return store_->Get(name, shape);
  };
  const int64_t dim = c.dim;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  ASSIGN_OR_RETURN(tok_embeddings_, get("tok_embeddings.weight", {c.vocab_size, dim}));
  ASSIGN_OR_RETURN(norm_, get("norm.weight", {dim}));
  ASSIGN_OR_RETURN(output_, get("output.weight", {c.vocab_size, dim}));

  const int64_t rows = m.rows();
  if (!m.layers.empty() && m.share_values) {
    ASSIGN_OR_RETURN(TensorView values, get("memory.values.weight", {rows, m.v_dim}));
    value_tables_.push_back(std::move(values));
  }
  layers_.resize(c.n_layers);
  for (int i = 0; i < c.n_layers; ++i) {
    Layer& l = layers_[i];
    const std::string p = absl::StrCat("layers.", i, ".");
    ASSIGN_OR_RETURN(l.attention_norm, get(p + "attention_norm.weight", {dim}));
    ASSIGN_OR_RETURN(l.ffn_norm, get(p + "ffn_norm.weight", {dim}));
    ASSIGN_OR_RETURN(l.wq, get(p + "attention.wq.weight", {q_dim, dim}));
    ASSIGN_OR_RETURN(l.wk, get(p + "attention.wk.weight", {kv_dim, dim}));
    ASSIGN_OR_RETURN(l.wv, get(p + "attention.wv.weight", {kv_dim, dim}));
    ASSIGN_OR_RETURN(l.wo, get(p + "attention.wo.weight", {dim, q_dim}));
    const std::string f = p + "feed_forward.";
    l.memory = c.IsMemoryLayer(i);
    if (!l.memory) {
      const int64_t hidden = c.ffn_hidden_dim;
      ASSIGN_OR_RETURN(l.w1, get(f + "w1.weight", {hidden, dim}));
      ASSIGN_OR_RETURN(l.w2, get(f + "w2.weight", {dim, hidden}));
      ASSIGN_OR_RETURN(l.w3, get(f + "w3.weight", {hidden, dim}));
      continue;
    }
    const int64_t qk = static_cast<int64_t>(m.heads) * m.k_dim;
    ASSIGN_OR_RETURN(l.keys, get(f + "keys", {2LL * m.heads * m.n_keys, m.k_dim / 2}));
    ASSIGN_OR_RETURN(l.query_w, get(f + "query_proj.query_mlps.0.weight", {qk, dim}));
    ASSIGN_OR_RETURN(l.query_b, get(f + "query_proj.query_mlps.0.bias", {qk}));
    if (m.swilu_projection) {
      ASSIGN_OR_RETURN(l.swilu_w, get(f + "swilu_projection.weight", {m.v_dim, dim}));
      ASSIGN_OR_RETURN(l.swilu_b, get(f + "swilu_projection.bias", {m.v_dim}));
    }
    if (m.value_proj) {
      ASSIGN_OR_RETURN(l.value_proj_w, get(f + "value_proj.weight", {dim, m.v_dim}));
      ASSIGN_OR_RETURN(l.value_proj_b, get(f + "value_proj.bias", {dim}));
    }
    if (m.gated) {
      ASSIGN_OR_RETURN(l.gating_w, get(f + "gating.weight", {1, dim}));
      ASSIGN_OR_RETURN(l.gating_b, get(f + "gating.bias", {1}));
    }
    if (m.share_values) {
      l.value_table = 0;
    } else {
      ASSIGN_OR_RETURN(TensorView values, get(f + "values.weight", {rows, m.v_dim}));
      l.value_table = static_cast<int>(value_tables_.size());
      value_tables_.push_back(std::move(values));
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
  return absl::OkStatus();
}

int64_t Model::value_table_bytes() const {
  int64_t bytes = 0;
  for (const TensorView& t : value_tables_) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

std::unique_ptr<KvCache> Model::NewCache(int capacity) const {
  PagedKvLayout layout;
  layout.block_size = std::max(1, std::min(capacity, config_.max_seqlen));
  layout.num_blocks = 1;
  layout.kv_dim = static_cast<int64_t>(config_.n_kv_heads) * config_.head_dim;
  return std::unique_ptr<KvCache>(new KvCache(this, config_.n_layers, layout));
}

int64_t Model::KvBytesPerBlock(int block_size) const {
  return 2LL * config_.n_layers * block_size * config_.n_kv_heads * config_.head_dim *
         static_cast<int64_t>(sizeof(float));
}

absl::StatusOr<std::unique_ptr<KvCache>> Model::NewPagedCache(const PagedKvLayout& layout) const {
  RETURN_IF_ERROR(layout.Validate());
  const int64_t kv_dim = static_cast<int64_t>(config_.n_kv_heads) * config_.head_dim;
  if (layout.kv_dim != kv_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV layout kv_dim is ", layout.kv_dim, "; the model's n_kv_heads * head_dim is ", kv_dim));
  }
  const int64_t bytes = KvBytesPerBlock(layout.block_size) * layout.num_blocks;
  std::unique_ptr<KvCache> cache;
  try {
    cache.reset(new KvCache(this, config_.n_layers, layout));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the KV cache: ", layout.num_blocks, " blocks x ",
                     layout.block_size, " tokens = ", bytes, " bytes (lower --num_blocks)"));
  }
  return cache;
}

void Model::EnsureRope(int positions) {
  if (positions <= rope_.max_positions) return;
  int n = std::max(positions, 2 * rope_.max_positions);
  n = std::min(n, config_.max_seqlen);
  rope_ = RopeTable::Make(config_.head_dim, n, config_.rope_theta);
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

  EnsureRope(static_cast<int>(end));
  const int64_t vocab = config_.vocab_size;
  logits->resize(static_cast<size_t>(all_logits ? tokens.size() : 1) * vocab);
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
  const KvBlockId block0 = 0;  // a single-sequence cache is one block
  for (size_t c0 = 0; c0 < tokens.size(); c0 += kMaxChunk) {
    const size_t n = std::min<size_t>(kMaxChunk, tokens.size() - c0);
    const bool last_chunk = c0 + n == tokens.size();
    Piece piece;
    piece.tokens = tokens.subspan(c0, n);
    piece.start = static_cast<int>(start + c0);
    piece.blocks = &block0;
    float* out = nullptr;
    if (all_logits) {
      piece.logits = Piece::Logits::kAll;
      out = logits->data() + c0 * vocab;
    } else if (last_chunk) {
      piece.logits = Piece::Logits::kLast;
      out = logits->data();
    }
    RunPieces(cache, absl::MakeConstSpan(&piece, 1), out, trace);
    cache->length_ += static_cast<int>(n);
  }
  return absl::OkStatus();
}

absl::Status Model::ForwardBatch(KvCache* cache, absl::Span<const BatchChunk> chunks,
                                 std::vector<float>* logits) {
  if (cache == nullptr || logits == nullptr) {
    return absl::InvalidArgumentError("ForwardBatch: cache and logits must not be null");
  }
  if (cache->owner_ != this) {
    return absl::InvalidArgumentError("ForwardBatch: the KV cache was created by another model");
  }
  const PagedKvLayout& layout = cache->layout();
  int max_end = 0;
  int n_logits = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const BatchChunk& c = chunks[i];
    if (c.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("chunks[", i, "]: tokens is empty"));
    }
    for (size_t j = 0; j < c.tokens.size(); ++j) {
      if (c.tokens[j] < 0 || c.tokens[j] >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("chunks[", i, "]: token id ", c.tokens[j], " at index ", j,
                         " is outside the vocabulary [0, ", config_.vocab_size, ")"));
      }
    }
    const int64_t end = static_cast<int64_t>(c.first_position) + c.tokens.size();
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
    max_end = std::max<int>(max_end, static_cast<int>(end));
    n_logits += c.wants_logits ? 1 : 0;
  }
  EnsureRope(max_end);
  const int64_t vocab = config_.vocab_size;
  logits->resize(static_cast<size_t>(n_logits) * vocab);

  // Cut the chunks into passes of at most kMaxChunk tokens; a chunk may be
  // split across passes (its later tokens then read the K/V its earlier
  // tokens wrote), which gives the same results.
  std::vector<Piece> pass;
  int pass_tokens = 0;
  int logits_before_pass = 0;  // logits rows written by earlier passes
  int pass_logits = 0;
  auto flush = [&]() {
    if (pass.empty()) return;
    RunPieces(cache, pass, logits->data() + static_cast<int64_t>(logits_before_pass) * vocab,
              nullptr);
    logits_before_pass += pass_logits;
    pass.clear();
    pass_tokens = 0;
    pass_logits = 0;
  };
  for (const BatchChunk& c : chunks) {
    size_t done = 0;
    while (done < c.tokens.size()) {
      if (pass_tokens == kMaxChunk) flush();
      const size_t n = std::min<size_t>(kMaxChunk - pass_tokens, c.tokens.size() - done);
      Piece piece;
      piece.tokens = c.tokens.subspan(done, n);
      piece.start = c.first_position + static_cast<int>(done);
      piece.blocks = c.blocks.data();
      done += n;
      if (done == c.tokens.size() && c.wants_logits) {
        piece.logits = Piece::Logits::kLast;
        ++pass_logits;
      }
      pass.push_back(piece);
      pass_tokens += static_cast<int>(n);
    }
  }
  flush();
  return absl::OkStatus();
}

void Model::RunPieces(KvCache* cache, absl::Span<const Piece> pieces, float* logits,
                      std::vector<MemoryTrace>* trace) {
  const ModelConfig& c = config_;
  const MemoryConfig& m = c.memory;
  Backend& be = *backend_;
  Scratch& s = *scratch_;
  const PagedKvLayout& layout = cache->layout();
  int64_t T = 0;
  for (const Piece& p : pieces) T += static_cast<int64_t>(p.tokens.size());
  const int64_t dim = c.dim;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  const int64_t mem_q_dim = static_cast<int64_t>(m.heads) * m.k_dim;
  const int64_t wide = std::max<int64_t>(c.ffn_hidden_dim, mem_q_dim);
  auto grow = [](std::vector<float>* v, int64_t n) {
    if (static_cast<int64_t>(v->size()) < n) v->resize(n);
  };
  grow(&s.h, T * dim);
  grow(&s.xn, T * dim);
  grow(&s.q, T * q_dim);
  grow(&s.k, T * kv_dim);
  grow(&s.v, T * kv_dim);
  grow(&s.attn, T * q_dim);
  grow(&s.out, T * std::max<int64_t>(dim, m.v_dim));
  grow(&s.a, T * wide);
  grow(&s.b, T * std::max<int64_t>(c.ffn_hidden_dim, m.v_dim));
  grow(&s.y, T * m.v_dim);
  grow(&s.gate, T);
  // Per token: position, id and cache row; per piece: attention arguments
  // (pointers filled per layer) and which rows of h need logits.
  s.positions.clear();
  s.ids.clear();
  s.slots.clear();
  s.logit_tokens.clear();
  s.attention.clear();
  for (const Piece& p : pieces) {
    const int64_t first = static_cast<int64_t>(s.ids.size());
    for (size_t t = 0; t < p.tokens.size(); ++t) {
      const int pos = p.start + static_cast<int>(t);
      s.positions.push_back(pos);
      s.ids.push_back(p.tokens[t]);
      s.slots.push_back(
          layout.Offset(KvSlot{p.blocks[pos / layout.block_size], pos % layout.block_size}));
    }
    const int64_t n = static_cast<int64_t>(p.tokens.size());
    if (p.logits == Piece::Logits::kAll) {
      for (int64_t t = 0; t < n; ++t) s.logit_tokens.push_back(first + t);
    } else if (p.logits == Piece::Logits::kLast) {
      s.logit_tokens.push_back(first + n - 1);
    }
    AttentionArgs args;
    args.n_tokens = n;
    args.start_pos = p.start;
    args.n_heads = c.n_heads;
    args.n_kv_heads = c.n_kv_heads;
    args.head_dim = c.head_dim;
    args.sliding_window = c.sliding_window;
    args.q = s.q.data() + first * q_dim;
    args.out = s.attn.data() + first * q_dim;
    args.block_table = p.blocks;
    args.block_size = layout.block_size;
    s.attention.push_back(args);
  }

  float* h = s.h.data();    // [T, dim]
  float* xn = s.xn.data();  // [T, dim]
  be.Embedding(tok_embeddings_, s.ids, h);
  int memory_index = 0;
  for (int i = 0; i < c.n_layers; ++i) {
    const Layer& l = layers_[i];
    // --- attention block: h += wo(attention(rope(wq x), rope(wk x), wv x)) ---
    be.RmsNorm(h, T, l.attention_norm, c.norm_eps, xn);
    float* q = s.q.data();      // [T, n_heads, head_dim]
    float* k_new = s.k.data();  // [T, kv_dim]
    float* v_new = s.v.data();  // [T, kv_dim]
    be.MatMul(xn, T, l.wq, nullptr, q);
    be.MatMul(xn, T, l.wk, nullptr, k_new);
    be.MatMul(xn, T, l.wv, nullptr, v_new);
    be.Rope(q, T, c.n_heads, c.head_dim, s.positions.data(), rope_);
    be.Rope(k_new, T, c.n_kv_heads, c.head_dim, s.positions.data(), rope_);
    float* k_cache = cache->keys(i);
    float* v_cache = cache->values(i);
    for (int64_t t = 0; t < T; ++t) {
      std::copy(k_new + t * kv_dim, k_new + (t + 1) * kv_dim, k_cache + s.slots[t]);
      std::copy(v_new + t * kv_dim, v_new + (t + 1) * kv_dim, v_cache + s.slots[t]);
    }
    for (AttentionArgs& args : s.attention) {
      args.k_cache = k_cache;
      args.v_cache = v_cache;
    }
    be.Attention(s.attention);
    be.MatMul(s.attn.data(), T, l.wo, nullptr, s.out.data());
    be.Add(s.out.data(), T * dim, h);

    // --- feed-forward block: h += ffn(ffn_norm(h)) ---
    be.RmsNorm(h, T, l.ffn_norm, c.norm_eps, xn);
    if (!l.memory) {
      const int64_t hidden = c.ffn_hidden_dim;
      float* a = s.a.data();  // [T, hidden]
      float* b = s.b.data();  // [T, hidden]
      be.MatMul(xn, T, l.w1, nullptr, a);
      be.MatMul(xn, T, l.w3, nullptr, b);
      be.SwiGlu(a, b, T * hidden, a);
      be.MatMul(a, T, l.w2, nullptr, s.out.data());
      be.Add(s.out.data(), T * dim, h);
      continue;
    }
    float* queries = s.a.data();  // [T, heads * k_dim]
    float* y = s.y.data();        // [T, v_dim]
    be.MatMul(xn, T, l.query_w, &l.query_b, queries);
    MemoryLookupArgs look;
    look.n_tokens = T;
    look.heads = m.heads;
    look.n_keys = m.n_keys;
    look.knn = m.knn;
    look.k_dim = m.k_dim;
    look.v_dim = m.v_dim;
    look.queries = queries;
    look.keys = &l.keys;
    look.values = &value_tables_[l.value_table];
    look.out = y;
    MemoryTrace* tr = trace != nullptr ? &(*trace)[memory_index] : nullptr;
    if (tr != nullptr) {
      const size_t n = static_cast<size_t>(T) * m.heads * m.knn;
      s.trace_rows.resize(n);
      s.trace_scores.resize(n);
      look.out_indices = s.trace_rows.data();
      look.out_scores = s.trace_scores.data();
    }
    be.MemoryLookup(look);
    if (tr != nullptr) {
      tr->tokens += static_cast<int>(T);
      tr->indices.insert(tr->indices.end(), s.trace_rows.begin(), s.trace_rows.end());
      tr->scores.insert(tr->scores.end(), s.trace_scores.begin(), s.trace_scores.end());
    }
    ++memory_index;
    float* out = y;  // [T, dim] once projected
    if (m.swilu_projection) {
      float* proj = s.b.data();  // [T, v_dim]
      be.MatMul(xn, T, l.swilu_w, &l.swilu_b, proj);
      be.SwiGlu(proj, y, T * m.v_dim, y);  // y * silu(swilu_projection(x))
    }
    if (m.value_proj) {
      be.MatMul(y, T, l.value_proj_w, &l.value_proj_b, s.out.data());
      out = s.out.data();
    }
    if (m.gated) {
      be.MatMul(xn, T, l.gating_w, &l.gating_b, s.gate.data());  // [T, 1]
      be.SigmoidGateRows(s.gate.data(), T, dim, out);
    }
    be.Add(out, T * dim, h);
  }

  // --- output: logits = output(norm(h)) for the wanted rows ---
  const int64_t rows = static_cast<int64_t>(s.logit_tokens.size());
  if (rows == 0) return;
  for (int64_t r = 0; r < rows; ++r) {
    be.RmsNorm(h + s.logit_tokens[r] * dim, 1, norm_, c.norm_eps, xn + r * dim);
  }
  be.MatMul(xn, rows, output_, nullptr, logits);
}

}  // namespace memserve
