// Model on tiny random checkpoints written by the test: the forward pass
// against a plain double-precision re-implementation of docs/model.md,
// prefill vs token-by-token through the KV cache, and load/forward errors.
#include "engine/model.h"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/backend/testing/random_model.h"
#include "engine/dtype.h"
#include "engine/model_cpu.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::HasSubstr;

using testutil::MakeTensor;
using testutil::TestTensor;

// A tiny model description; every knob of the architecture is exercised by
// one of the variants below.
struct TinySpec : RandomModelSpec {
  TinySpec() {
    name = "model_test";
    dim = 32;
    n_layers = 3;
    n_heads = 4;
    n_kv_heads = 2;
    head_dim = 8;
    ffn_hidden = 48;
    vocab = 260;
    max_seqlen = 64;
    mem_layers = {1};
    n_keys = 8;
    mem_heads = 2;
    knn = 4;
    k_dim = 12;
    v_dim = 32;
    gated = true;
  }
};

std::string ConfigJson(const TinySpec& s) { return RandomModelConfigJson(s); }

// Tensor values as the model sees them (bf16-rounded where stored as bf16).
using Weights = std::map<std::string, std::vector<float>>;
using Checkpoint = RandomCheckpoint;

Checkpoint MakeCheckpoint(const TinySpec& s) { return MakeRandomCheckpoint(s); }

std::string WriteCheckpoint(const std::string& config_json, std::vector<TestTensor> tensors) {
  absl::StatusOr<std::string> dir = WriteModelDir("model_test", config_json, std::move(tensors));
  EXPECT_TRUE(dir.ok()) << dir.status();
  return dir.ok() ? *dir : std::string();
}

// ---------------------------------------------------------------------------
// A plain double-precision forward pass of docs/model.md, written from the
// description without reusing engine code.

using Mat = std::vector<double>;  // row-major

Mat Linear(const Mat& x, int64_t rows, int64_t in, const std::vector<float>& w, int64_t out,
           const std::vector<float>* bias = nullptr) {
  Mat y(rows * out, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias != nullptr ? (*bias)[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += x[r * in + i] * w[o * in + i];
      y[r * out + o] = acc;
    }
  }
  return y;
}

Mat RmsNormRef(const Mat& x, int64_t rows, int64_t dim, const std::vector<float>& w) {
  Mat y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = x[r * dim + i] * inv * w[i];
  }
  return y;
}

double SiluRef(double x) { return x / (1.0 + std::exp(-x)); }

void RopeRef(Mat* x, int64_t T, int heads, int hd, double theta) {
  for (int64_t t = 0; t < T; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        const double angle = t * std::pow(theta, -2.0 * i / hd);
        double& a = (*x)[(t * heads + h) * hd + 2 * i];
        double& b = (*x)[(t * heads + h) * hd + 2 * i + 1];
        const double a0 = a, b0 = b;
        a = std::cos(angle) * a0 - std::sin(angle) * b0;
        b = std::sin(angle) * a0 + std::cos(angle) * b0;
      }
    }
  }
}

Mat ReferenceLogits(const TinySpec& s, const Weights& w, const std::vector<int>& tokens) {
  const int64_t T = tokens.size(), dim = s.dim, hd = s.head_dim;
  auto W = [&](const std::string& name) -> const std::vector<float>& { return w.at(name); };
  Mat h(T * dim);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < dim; ++i)
      h[t * dim + i] = W("tok_embeddings.weight")[tokens[t] * dim + i];
  }
  for (int l = 0; l < s.n_layers; ++l) {
    const std::string p = absl::StrCat("layers.", l, ".");
    Mat x = RmsNormRef(h, T, dim, W(p + "attention_norm.weight"));
    Mat q = Linear(x, T, dim, W(p + "attention.wq.weight"), s.n_heads * hd);
    Mat k = Linear(x, T, dim, W(p + "attention.wk.weight"), s.n_kv_heads * hd);
    Mat v = Linear(x, T, dim, W(p + "attention.wv.weight"), s.n_kv_heads * hd);
    RopeRef(&q, T, s.n_heads, hd, s.rope_theta);
    RopeRef(&k, T, s.n_kv_heads, hd, s.rope_theta);
    Mat att(T * s.n_heads * hd, 0.0);
    for (int64_t t = 0; t < T; ++t) {
      for (int hh = 0; hh < s.n_heads; ++hh) {
        const int kv = hh / (s.n_heads / s.n_kv_heads);
        std::vector<double> sc;
        std::vector<int64_t> js;
        for (int64_t j = 0; j <= t; ++j) {
          if (s.sliding_window > 0 && t - j >= s.sliding_window) continue;
          double d = 0;
          for (int i = 0; i < hd; ++i)
            d += q[(t * s.n_heads + hh) * hd + i] * k[(j * s.n_kv_heads + kv) * hd + i];
          sc.push_back(d / std::sqrt(static_cast<double>(hd)));
          js.push_back(j);
        }
        const double mx = *std::max_element(sc.begin(), sc.end());
        double sum = 0;
        for (double& e : sc) sum += (e = std::exp(e - mx));
        for (size_t n = 0; n < sc.size(); ++n) {
          for (int i = 0; i < hd; ++i) {
            att[(t * s.n_heads + hh) * hd + i] +=
                sc[n] / sum * v[(js[n] * s.n_kv_heads + kv) * hd + i];
          }
        }
      }
    }
    Mat o = Linear(att, T, s.n_heads * hd, W(p + "attention.wo.weight"), dim);
    for (int64_t i = 0; i < T * dim; ++i) h[i] += o[i];

    x = RmsNormRef(h, T, dim, W(p + "ffn_norm.weight"));
    const std::string f = p + "feed_forward.";
    Mat out;
    if (std::find(s.mem_layers.begin(), s.mem_layers.end(), l) == s.mem_layers.end()) {
      Mat a = Linear(x, T, dim, W(f + "w1.weight"), s.ffn_hidden);
      Mat b = Linear(x, T, dim, W(f + "w3.weight"), s.ffn_hidden);
      for (size_t i = 0; i < a.size(); ++i) a[i] = SiluRef(a[i]) * b[i];
      out = Linear(a, T, s.ffn_hidden, W(f + "w2.weight"), dim);
    } else {
      const int half = s.k_dim / 2;
      const std::vector<float>& keys = W(f + "keys");
      const std::vector<float>& values =
          s.share_values ? W("memory.values.weight") : W(f + "values.weight");
      Mat mq = Linear(x, T, dim, W(f + "query_proj.query_mlps.0.weight"), s.mem_heads * s.k_dim,
                      &W(f + "query_proj.query_mlps.0.bias"));
      Mat y(T * s.v_dim, 0.0);
      for (int64_t t = 0; t < T; ++t) {
        for (int hh = 0; hh < s.mem_heads; ++hh) {
          // Brute force over every row of the product key set.
          std::vector<std::pair<double, int64_t>> all;
          std::vector<double> s1(s.n_keys), s2(s.n_keys);
          for (int j = 0; j < s.n_keys; ++j) {
            double d1 = 0, d2 = 0;
            for (int i = 0; i < half; ++i) {
              d1 += mq[t * s.mem_heads * s.k_dim + hh * s.k_dim + i] *
                    keys[((hh * 2 + 0) * s.n_keys + j) * half + i];
              d2 += mq[t * s.mem_heads * s.k_dim + hh * s.k_dim + half + i] *
                    keys[((hh * 2 + 1) * s.n_keys + j) * half + i];
            }
            s1[j] = d1;
            s2[j] = d2;
          }
          for (int a = 0; a < s.n_keys; ++a) {
            for (int b = 0; b < s.n_keys; ++b) all.emplace_back(s1[a] + s2[b], a * s.n_keys + b);
          }
          std::sort(all.begin(), all.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
          double sum = 0;
          for (int kk = 0; kk < s.knn; ++kk) sum += std::exp(all[kk].first - all[0].first);
          for (int kk = 0; kk < s.knn; ++kk) {
            const double wgt = std::exp(all[kk].first - all[0].first) / sum;
            for (int c = 0; c < s.v_dim; ++c)
              y[t * s.v_dim + c] += wgt * values[all[kk].second * s.v_dim + c];
          }
        }
      }
      if (s.swilu) {
        Mat g = Linear(x, T, dim, W(f + "swilu_projection.weight"), s.v_dim,
                       &W(f + "swilu_projection.bias"));
        for (size_t i = 0; i < y.size(); ++i) y[i] *= SiluRef(g[i]);
      }
      out = s.value_proj
                ? Linear(y, T, s.v_dim, W(f + "value_proj.weight"), dim, &W(f + "value_proj.bias"))
                : y;
      if (s.gated) {
        Mat g = Linear(x, T, dim, W(f + "gating.weight"), 1, &W(f + "gating.bias"));
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t i = 0; i < dim; ++i) out[t * dim + i] *= 1.0 / (1.0 + std::exp(-g[t]));
        }
      }
    }
    for (int64_t i = 0; i < T * dim; ++i) h[i] += out[i];
  }
  return Linear(RmsNormRef(h, T, dim, W("norm.weight")), T, dim, W("output.weight"), s.vocab);
}

// ---------------------------------------------------------------------------

std::vector<int> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int> t(n);
  for (int& x : t) x = static_cast<int>(rng() % vocab);
  return t;
}

double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

struct Variant {
  const char* name;
  TinySpec spec;
};

std::vector<Variant> Variants() {
  std::vector<Variant> v;
  v.push_back({"memory_plus_gated_shared", TinySpec()});
  TinySpec b;
  b.dense = DType::kBF16;
  b.n_layers = 4;
  b.mem_layers = {0, 2};
  b.share_values = false;
  b.swilu = false;
  b.value_proj = true;
  b.gated = false;
  b.v_dim = 20;
  b.sliding_window = 5;
  b.n_kv_heads = 1;
  b.knn = 8;
  b.seed = 2;
  v.push_back({"bf16_unshared_projection_window_mqa", b});
  TinySpec c;
  c.mem_layers = {};
  c.seed = 3;
  c.n_kv_heads = 4;
  c.rope_theta = 500000.0f;
  v.push_back({"dense", c});
  TinySpec d;
  d.swilu = false;
  d.value_proj = false;  // out = y, v_dim == dim
  d.gated = true;
  d.mem_layers = {2};
  d.seed = 4;
  v.push_back({"memory_plain_gated", d});
  return v;
}

class ModelVariantTest : public ::testing::TestWithParam<Variant> {};

// R column shards of the value table (ModelOptions::memory_shards) give the
// same logits and memory traces as one, bit for bit, including a v_dim that
// is not a multiple of the 16-column shard alignment.
TEST(ModelMemoryShardsTest, ShardsAreBitIdentical) {
  TinySpec s;
  s.v_dim = 72;
  s.mem_layers = {1};
  const std::string dir = WriteCheckpoint(ConfigJson(s), MakeCheckpoint(s).tensors);
  const std::vector<int> tokens = RandomTokens(19, s.vocab, 5);
  std::vector<float> want;
  std::vector<MemoryTrace> want_trace;
  for (int shards : {1, 2, 3, 4, 7}) {
    auto model = LoadCpuModel(dir, ModelOptions{2, shards});
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->memory_pool().shards().back().col_end, 72);
    auto cache = (*model)->NewCache(s.max_seqlen);
    std::vector<float> logits;
    std::vector<MemoryTrace> trace;
    const absl::Status st = (*model)->Forward(cache.get(), tokens, true, &logits, &trace);
    ASSERT_TRUE(st.ok()) << st;
    if (shards == 1) {
      want = logits;
      want_trace = trace;
      continue;
    }
    ASSERT_EQ(logits.size(), want.size());
    EXPECT_EQ(0, std::memcmp(logits.data(), want.data(), want.size() * sizeof(float)))
        << shards << " shards";
    ASSERT_EQ(trace.size(), want_trace.size());
    EXPECT_EQ(trace[0].indices, want_trace[0].indices);
  }
  EXPECT_FALSE(LoadCpuModel(dir, ModelOptions{2, 65}).ok());
}

// A checkpoint split over several safetensors files with an index
// (model.safetensors.index.json) loads the same way: the same logits, bit for
// bit, and the value tables still used in place from the (shard's) mapping,
// never copied into a heap buffer. Unshared tables, so they land in
// different files.
TEST(ModelShardedCheckpointTest, SameLogitsAsOneFileAndTablesStayMapped) {
  TinySpec s;
  s.mem_layers = {0, 1};
  s.share_values = false;
  const Checkpoint ck = MakeCheckpoint(s);
  const std::string one = WriteCheckpoint(ConfigJson(s), ck.tensors);
  const std::vector<int> tokens = RandomTokens(11, s.vocab, 3);
  std::vector<float> want;
  for (int files : {1, 3}) {
    std::string dir = one;
    if (files > 1) {
      absl::StatusOr<std::string> sharded =
          WriteShardedModelDir("model_test_sharded", ConfigJson(s), ck.tensors, files);
      ASSERT_TRUE(sharded.ok()) << sharded.status();
      dir = *sharded;
      std::ifstream index(dir + "/model.safetensors.index.json");
      ASSERT_TRUE(index.good());
      std::ifstream single(dir + "/model.safetensors");
      ASSERT_FALSE(single.good());
    }
    auto model = LoadCpuModel(dir, ModelOptions{2, 2});
    ASSERT_TRUE(model.ok()) << model.status();
    const MemoryPool& pool = (*model)->memory_pool();
    ASSERT_EQ(pool.num_tables(), 2);
    for (int t = 0; t < pool.num_tables(); ++t) {
      EXPECT_STREQ(pool.table(t).buffer->type_name(), "cpu-mapped") << files << " files";
      EXPECT_EQ(pool.host_ranges()[t].second, pool.table(t).nbytes());
    }
    auto cache = (*model)->NewCache(s.max_seqlen);
    std::vector<float> logits;
    ASSERT_TRUE((*model)->Forward(cache.get(), tokens, /*all_logits=*/true, &logits).ok());
    if (files == 1) {
      want = logits;
      continue;
    }
    ASSERT_EQ(logits.size(), want.size());
    EXPECT_EQ(0, std::memcmp(logits.data(), want.data(), want.size() * sizeof(float)));
  }
}

TEST_P(ModelVariantTest, MatchesDoublePrecisionSpecImplementation) {
  const TinySpec& s = GetParam().spec;
  Checkpoint ck = MakeCheckpoint(s);
  auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(s), ck.tensors), ModelOptions{2});
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int> tokens = RandomTokens(12, s.vocab, 7);
  auto cache = (*model)->NewCache(s.max_seqlen);
  std::vector<float> logits;
  ASSERT_TRUE((*model)->Forward(cache.get(), tokens, /*all_logits=*/true, &logits).ok());
  ASSERT_EQ(logits.size(), tokens.size() * s.vocab);
  const Mat ref = ReferenceLogits(s, ck.weights, tokens);
  double scale = 0;
  for (double x : ref) scale = std::max(scale, std::fabs(x));
  ASSERT_GT(scale, 0.1);
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_NEAR(logits[i], ref[i], 2e-4 * scale)
        << "token " << i / s.vocab << " id " << i % s.vocab;
  }
}

TEST_P(ModelVariantTest, PrefillEqualsTokenByTokenDecode) {
  const TinySpec& s = GetParam().spec;
  auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(s), MakeCheckpoint(s).tensors));
  ASSERT_TRUE(model.ok()) << model.status();
  Model& m = **model;
  const std::vector<int> tokens = RandomTokens(20, s.vocab, 11);
  const int V = s.vocab;

  auto cache = m.NewCache(32);
  std::vector<float> prefill;
  ASSERT_TRUE(m.Forward(cache.get(), tokens, /*all_logits=*/true, &prefill).ok());
  EXPECT_EQ(cache->length(), 20);

  // Last-token logits of a prefill equal the last row of all_logits.
  auto cache2 = m.NewCache(32);
  std::vector<float> last;
  ASSERT_TRUE(m.Forward(cache2.get(), tokens, /*all_logits=*/false, &last).ok());
  ASSERT_EQ(last.size(), static_cast<size_t>(V));
  for (int v = 0; v < V; ++v) ASSERT_EQ(last[v], prefill[19 * V + v]);

  // Token by token (after a 3-token first chunk) through the KV cache.
  auto step_cache = m.NewCache(32);
  std::vector<float> step;
  const double tol = 1e-4 * std::max(1.0, MaxAbs(prefill));
  ASSERT_TRUE(
      m.Forward(step_cache.get(), absl::Span<const int>(tokens).subspan(0, 3), true, &step).ok());
  for (int i = 0; i < 3 * V; ++i) ASSERT_NEAR(step[i], prefill[i], tol);
  for (int t = 3; t < 20; ++t) {
    ASSERT_TRUE(
        m.Forward(step_cache.get(), absl::Span<const int>(tokens).subspan(t, 1), false, &step)
            .ok());
    ASSERT_EQ(step_cache->length(), t + 1);
    for (int v = 0; v < V; ++v) ASSERT_NEAR(step[v], prefill[t * V + v], tol) << "t=" << t;
  }

  // Clear() starts over at position 0.
  cache->Clear();
  EXPECT_EQ(cache->length(), 0);
  std::vector<float> again;
  ASSERT_TRUE(m.Forward(cache.get(), tokens, true, &again).ok());
  EXPECT_EQ(again, prefill);
}

TEST_P(ModelVariantTest, TraceCoversEveryMemoryLayer) {
  const TinySpec& s = GetParam().spec;
  auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(s), MakeCheckpoint(s).tensors));
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int> tokens = RandomTokens(5, s.vocab, 13);
  auto cache = (*model)->NewCache(16);
  std::vector<float> logits;
  std::vector<MemoryTrace> trace(3);  // replaced, not appended to
  ASSERT_TRUE((*model)->Forward(cache.get(), tokens, false, &logits, &trace).ok());
  ASSERT_EQ(trace.size(), s.mem_layers.size());
  for (size_t i = 0; i < trace.size(); ++i) {
    const MemoryTrace& t = trace[i];
    EXPECT_EQ(t.layer, s.mem_layers[i]);
    EXPECT_EQ(t.tokens, 5);
    EXPECT_EQ(t.heads, s.mem_heads);
    EXPECT_EQ(t.knn, s.knn);
    ASSERT_EQ(t.indices.size(), static_cast<size_t>(5 * s.mem_heads * s.knn));
    ASSERT_EQ(t.scores.size(), t.indices.size());
    for (size_t j = 0; j < t.indices.size(); ++j) {
      EXPECT_GE(t.indices[j], 0);
      EXPECT_LT(t.indices[j], static_cast<int64_t>(s.n_keys) * s.n_keys);
      if (j % s.knn != 0) {
        EXPECT_GE(t.scores[j - 1], t.scores[j]);
      }
    }
  }
}

// Serving steps: several sequences, prompts cut into random chunks, batched
// with each other's chunks and decode tokens in shuffled paged blocks. Each
// sequence's logits must equal, bit for bit, the same sequence computed alone
// through Forward (whole prompt, then one token per call): per-token results
// may depend neither on the other sequences nor on how a prompt is chunked.
TEST_P(ModelVariantTest, ForwardBatchEqualsSoloForwardBitExactly) {
  const TinySpec& s = GetParam().spec;
  auto loaded = LoadCpuModel(WriteCheckpoint(ConfigJson(s), MakeCheckpoint(s).tensors));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  Model& m = **loaded;
  const int V = s.vocab;
  constexpr int kSeqs = 5, kDecode = 6, kBlockSize = 4;
  std::mt19937 rng(99);
  struct Seq {
    std::vector<int> tokens;  // prompt, then the "sampled" tokens
    int prompt = 0;
    int computed = 0;
    std::vector<KvBlockId> blocks;
    std::vector<std::vector<float>> solo_logits;  // after the prompt, then per decode
    std::vector<std::vector<float>> batch_logits;
  };
  std::vector<Seq> seqs(kSeqs);
  for (int i = 0; i < kSeqs; ++i) {
    Seq& q = seqs[i];
    q.prompt = 1 + static_cast<int>(rng() % 14);
    q.tokens = RandomTokens(q.prompt + kDecode, V, 100 + i);
    auto cache = m.NewCache(q.prompt + kDecode);
    std::vector<float> logits;
    ASSERT_TRUE(
        m.Forward(cache.get(), absl::MakeConstSpan(q.tokens).subspan(0, q.prompt), false, &logits)
            .ok());
    q.solo_logits.push_back(logits);
    for (int t = q.prompt; t < q.prompt + kDecode - 1; ++t) {
      ASSERT_TRUE(
          m.Forward(cache.get(), absl::MakeConstSpan(q.tokens).subspan(t, 1), false, &logits).ok());
      q.solo_logits.push_back(logits);
    }
  }
  // Shuffled block ids, handed out as sequences grow.
  PagedKvLayout layout;
  layout.block_size = kBlockSize;
  layout.num_blocks = 64;
  layout.kv_dim = static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  auto paged = m.NewPagedCache(layout);
  ASSERT_TRUE(paged.ok()) << paged.status();
  std::vector<KvBlockId> free_blocks(layout.num_blocks);
  for (int b = 0; b < layout.num_blocks; ++b) free_blocks[b] = b;
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);

  for (int step = 0; step < 100; ++step) {
    std::vector<StepChunk> chunks;
    std::vector<int> owner;  // chunk -> sequence
    for (int i = 0; i < kSeqs; ++i) {
      Seq& q = seqs[i];
      const int known = q.prompt + static_cast<int>(q.batch_logits.size());
      if (q.computed == known || q.batch_logits.size() == kDecode) continue;
      if (rng() % 4 == 0) continue;  // sits this step out
      const int n =
          q.computed < q.prompt ? 1 + static_cast<int>(rng() % (q.prompt - q.computed)) : 1;
      while (static_cast<int>(q.blocks.size()) * kBlockSize < q.computed + n) {
        q.blocks.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
      chunks.push_back(StepChunk::ForTokens(absl::MakeConstSpan(q.tokens).subspan(q.computed, n),
                                            q.computed, q.blocks, q.computed + n == known));
      owner.push_back(i);
      q.computed += n;
    }
    if (chunks.empty()) continue;
    std::vector<float> logits;
    ASSERT_TRUE(m.ForwardBatch(paged->get(), chunks, &logits).ok());
    size_t row = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      if (!chunks[c].wants_logits) continue;
      seqs[owner[c]].batch_logits.emplace_back(logits.begin() + row * V,
                                               logits.begin() + (row + 1) * V);
      ++row;
    }
    ASSERT_EQ(row * V, logits.size());
  }
  for (int i = 0; i < kSeqs; ++i) {
    ASSERT_EQ(seqs[i].batch_logits.size(), static_cast<size_t>(kDecode)) << "sequence " << i;
    for (int k = 0; k < kDecode; ++k) {
      ASSERT_EQ(seqs[i].batch_logits[k], seqs[i].solo_logits[k])
          << "sequence " << i << " output " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelVariantTest, ::testing::ValuesIn(Variants()),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return std::string(info.param.name);
                         });

TEST(ModelTest, LongPromptIsSplitIntoChunksWithSameResult) {
  TinySpec s;
  s.max_seqlen = 600;
  s.n_layers = 2;
  auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(s), MakeCheckpoint(s).tensors));
  ASSERT_TRUE(model.ok()) << model.status();
  Model& m = **model;
  const std::vector<int> tokens = RandomTokens(530, s.vocab, 17);  // > 2 chunks of 256
  auto cache = m.NewCache(600);
  std::vector<float> all;
  std::vector<MemoryTrace> trace;
  ASSERT_TRUE(m.Forward(cache.get(), tokens, true, &all, &trace).ok());
  ASSERT_EQ(trace.size(), 1u);
  EXPECT_EQ(trace[0].tokens, 530);
  EXPECT_EQ(trace[0].indices.size(), static_cast<size_t>(530 * s.mem_heads * s.knn));
  // The same sequence in two uneven calls.
  auto cache2 = m.NewCache(600);
  std::vector<float> part;
  absl::Span<const int> span(tokens);
  ASSERT_TRUE(m.Forward(cache2.get(), span.subspan(0, 300), false, &part).ok());
  ASSERT_TRUE(m.Forward(cache2.get(), span.subspan(300), true, &part).ok());
  const double tol = 1e-4 * std::max(1.0, MaxAbs(all));
  for (size_t i = 0; i < part.size(); ++i) ASSERT_NEAR(part[i], all[300 * s.vocab + i], tol);
}

class ModelErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_.max_seqlen = 16;
    auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(spec_), MakeCheckpoint(spec_).tensors));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }
  TinySpec spec_;
  std::unique_ptr<Model> model_;
};

TEST_F(ModelErrorTest, RejectsBadTokensAndLeavesCacheUnchanged) {
  auto cache = model_->NewCache(8);
  std::vector<float> logits;
  ASSERT_TRUE(model_->Forward(cache.get(), std::vector<int>{1, 2}, false, &logits).ok());
  const std::vector<float> before = logits;

  absl::Status st = model_->Forward(cache.get(), std::vector<int>{3, 260}, false, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("[0, 260)"));
  st = model_->Forward(cache.get(), std::vector<int>{-1}, false, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  st = model_->Forward(cache.get(), std::vector<int>{}, false, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("empty"));
  st = model_->Forward(cache.get(), std::vector<int>(7, 1), false, &logits);  // 2 + 7 > 8
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("capacity of 8"));
  EXPECT_EQ(cache->length(), 2);

  // The cache still continues the sequence exactly.
  ASSERT_TRUE(model_->Forward(cache.get(), std::vector<int>{5}, false, &logits).ok());
  auto fresh = model_->NewCache(8);
  std::vector<float> want;
  ASSERT_TRUE(model_->Forward(fresh.get(), std::vector<int>{1, 2, 5}, false, &want).ok());
  EXPECT_EQ(logits, want);
  EXPECT_NE(logits, before);
}

TEST_F(ModelErrorTest, CacheCapacityIsClampedToMaxSeqlen) {
  auto cache = model_->NewCache(1000);
  EXPECT_EQ(cache->capacity(), 16);
  EXPECT_EQ(model_->NewCache(0)->capacity(), 1);
  std::vector<float> logits;
  ASSERT_TRUE(model_->Forward(cache.get(), std::vector<int>(16, 3), false, &logits).ok());
  absl::Status st = model_->Forward(cache.get(), std::vector<int>{3}, false, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("17 tokens"));
}

TEST_F(ModelErrorTest, RejectsCacheOfAnotherModelAndNullArguments) {
  auto other = LoadCpuModel(WriteCheckpoint(ConfigJson(spec_), MakeCheckpoint(spec_).tensors));
  ASSERT_TRUE(other.ok());
  auto foreign = (*other)->NewCache(8);
  std::vector<float> logits;
  EXPECT_EQ(model_->Forward(foreign.get(), std::vector<int>{1}, false, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model_->Forward(nullptr, std::vector<int>{1}, false, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  auto cache = model_->NewCache(8);
  EXPECT_EQ(model_->Forward(cache.get(), std::vector<int>{1}, false, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ModelLoadTest, MissingTensorIsNamed) {
  TinySpec s;
  Checkpoint ck = MakeCheckpoint(s);
  ck.tensors.erase(std::remove_if(ck.tensors.begin(), ck.tensors.end(),
                                  [](const TestTensor& t) {
                                    return t.name == "layers.1.feed_forward.gating.bias";
                                  }),
                   ck.tensors.end());
  auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(s), ck.tensors));
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("layers.1.feed_forward.gating.bias"));
}

TEST(ModelLoadTest, UnexpectedTensorIsNamed) {
  TinySpec s;
  Checkpoint ck = MakeCheckpoint(s);
  ck.tensors.push_back(
      MakeTensor("layers.0.feed_forward.extra.weight", DType::kF32, {2}, {1.0f, 2.0f}));
  auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(s), ck.tensors));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("layers.0.feed_forward.extra.weight"));
}

TEST(ModelLoadTest, TensorsOfAnotherArchitectureAreUnexpected) {
  // A checkpoint with memory tensors loaded under a dense config.
  TinySpec with_memory;
  TinySpec dense = with_memory;
  dense.mem_layers = {};
  Checkpoint ck = MakeCheckpoint(with_memory);
  // Give layer 1 its dense FFN too, so that only the memory tensors are extra.
  Checkpoint d = MakeCheckpoint(dense);
  for (const TestTensor& t : d.tensors) {
    if (t.name.rfind("layers.1.feed_forward.w", 0) == 0) ck.tensors.push_back(t);
  }
  auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(dense), ck.tensors));
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("memory.values.weight"));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("layers.1.feed_forward.keys"));
}

TEST(ModelLoadTest, WrongShapeIsNamed) {
  TinySpec s;
  Checkpoint ck = MakeCheckpoint(s);
  for (TestTensor& t : ck.tensors) {
    if (t.name == "layers.2.attention.wk.weight") {
      t = MakeTensor(t.name, DType::kF32, {8, 32}, std::vector<float>(8 * 32, 0.5f));
    }
  }
  auto model = LoadCpuModel(WriteCheckpoint(ConfigJson(s), ck.tensors));
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("layers.2.attention.wk.weight"));
}

TEST(ModelLoadTest, MissingDirectoryFails) {
  auto model = LoadCpuModel("/nonexistent/memserve/model");
  EXPECT_FALSE(model.ok());
}

TEST_F(ModelErrorTest, ForwardBatchRejectsBadChunksNamingThem) {
  PagedKvLayout layout;
  layout.block_size = 4;
  layout.num_blocks = 3;
  layout.kv_dim = static_cast<int64_t>(spec_.n_kv_heads) * spec_.head_dim;
  auto paged = model_->NewPagedCache(layout);
  ASSERT_TRUE(paged.ok()) << paged.status();
  const std::vector<int> ok_tokens = {1, 2, 3};
  const std::vector<KvBlockId> one = {2}, bad_block = {3}, two = {0, 1};
  std::vector<float> logits;
  auto run = [&](StepChunk c) {
    std::vector<StepChunk> chunks = {StepChunk::ForTokens(ok_tokens, 0, two, true), c};
    return model_->ForwardBatch(paged->get(), chunks, &logits);
  };
  StepChunk c = StepChunk::ForTokens(ok_tokens, 0, one, true);
  EXPECT_TRUE(run(c).ok());
  EXPECT_EQ(logits.size(), 2u * spec_.vocab);
  c.num_tokens = 0;
  EXPECT_THAT(run(c).message(), ::testing::HasSubstr("chunks[1]: tokens is empty"));
  c.num_tokens = 3;
  c.token_ids = nullptr;
  EXPECT_THAT(run(c).message(), ::testing::HasSubstr("chunks[1]: token_ids is null"));
  const std::vector<int> bad_tokens = {1, spec_.vocab};
  c = StepChunk::ForTokens(bad_tokens, 0, one, true);
  EXPECT_THAT(run(c).message(), ::testing::HasSubstr("chunks[1]: token id"));
  c = StepChunk::ForTokens(ok_tokens, 0, one, true);
  c.first_position = 2;  // positions 2..4 need 2 blocks
  EXPECT_THAT(run(c).message(), ::testing::HasSubstr("do not cover position 4"));
  c.first_position = 0;
  c.blocks = bad_block;
  EXPECT_THAT(run(c).message(), ::testing::HasSubstr("blocks[0] = 3 is outside the cache"));
  c.blocks = one;
  c.first_position = spec_.max_seqlen - 1;
  EXPECT_THAT(run(c).message(), ::testing::HasSubstr("outside the model's context"));
  // A paged cache is not a single-sequence cache.
  EXPECT_THAT(model_->Forward(paged->get(), ok_tokens, false, &logits).message(),
              ::testing::HasSubstr("paged"));
  layout.kv_dim += 1;
  EXPECT_FALSE(model_->NewPagedCache(layout).ok());
}

// The engine's arrangement: a KvCacheManager owns the model's paged storage
// and the block tables that ForwardBatch reads.
TEST_F(ModelErrorTest, ForwardBatchOverAKvCacheManager) {
  PagedKvLayout layout;
  layout.block_size = 4;
  layout.num_blocks = 3;
  layout.kv_dim = static_cast<int64_t>(spec_.n_kv_heads) * spec_.head_dim;
  auto storage = model_->NewPagedCache(layout);
  ASSERT_TRUE(storage.ok()) << storage.status();
  const KvCache* paged = storage->get();
  KvCacheManager kv(*std::move(storage));
  EXPECT_EQ(kv.storage(), paged);
  EXPECT_EQ(kv.num_blocks(), 3);
  EXPECT_EQ(kv.block_size(), 4);
  ASSERT_TRUE(kv.Reserve(7, 2).ok());
  ASSERT_TRUE(kv.Reserve(8, 5).ok());  // blocks 1 and 2
  const std::vector<int> a = {1, 2}, b = {3, 4, 5, 6, 7};
  const std::vector<StepChunk> chunks = {StepChunk::ForTokens(a, 0, kv.blocks(7), true),
                                         StepChunk::ForTokens(b, 0, kv.blocks(8), true)};
  std::vector<float> batch, solo;
  ASSERT_TRUE(model_->ForwardBatch(kv.storage(), chunks, &batch).ok());
  auto cache = model_->NewCache(8);
  ASSERT_TRUE(model_->Forward(cache.get(), b, false, &solo).ok());
  ASSERT_EQ(batch.size(), 2 * solo.size());
  EXPECT_EQ(std::vector<float>(batch.begin() + solo.size(), batch.end()), solo);
}

}  // namespace
}  // namespace memserve
