#include "engine/backend/testing/model_parity.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

absl::Status Named(const absl::Status& s, const char* which) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(which, " backend: ", s.message()));
}

void Compare(const std::vector<float>& ref, const std::vector<float>& cand, int64_t vocab,
             float clear_margin, ModelParityReport* report) {
  const int64_t rows = static_cast<int64_t>(ref.size()) / vocab;
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = ref.data() + r * vocab;
    const float* b = cand.data() + r * vocab;
    double err = 0.0, norm = 0.0;
    float best = -INFINITY, second = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) {
      const double d = static_cast<double>(b[i]) - a[i];
      err += d * d;
      norm += static_cast<double>(a[i]) * a[i];
      report->max_abs_error = std::max(report->max_abs_error, std::abs(d));
      if (a[i] > best) {
        second = best;
        best = a[i];
      } else if (a[i] > second) {
        second = a[i];
      }
    }
    report->max_nmse = std::max(report->max_nmse, norm > 0 ? err / norm : err);
    if (std::max_element(a, a + vocab) - a != std::max_element(b, b + vocab) - b) {
      ++report->argmax_mismatches;
      if (best - second > clear_margin) ++report->clear_argmax_mismatches;
    }
    if (std::memcmp(a, b, static_cast<size_t>(vocab) * sizeof(float)) != 0) {
      report->bit_identical = false;
    }
    ++report->rows;
  }
}

}  // namespace

absl::StatusOr<ModelParityReport> CompareModelOnBackends(const std::string& dir, Backend& reference,
                                                         Backend& candidate,
                                                         const ModelParityOptions& options) {
  if (options.prompt.empty() || options.batch < 1 || options.decode_steps < 0) {
    return absl::InvalidArgumentError("CompareModelOnBackends: empty prompt or batch < 1");
  }
  ModelOptions ref_options, cand_options;
  ref_options.memory_shards = options.reference_memory_shards;
  cand_options.memory_shards = options.candidate_memory_shards;
  cand_options.kv_cache_dtype = options.candidate_kv_cache_dtype;
  cand_options.step_graphs = options.candidate_step_graphs;
  cand_options.plan_memory = options.candidate_plan_memory;
  absl::StatusOr<std::unique_ptr<Model>> ref_model = Model::Load(dir, reference, ref_options);
  RETURN_IF_ERROR(Named(ref_model.status(), "reference"));
  absl::StatusOr<std::unique_ptr<Model>> cand_model = Model::Load(dir, candidate, cand_options);
  RETURN_IF_ERROR(Named(cand_model.status(), "candidate"));
  Model& ref = **ref_model;
  Model& cand = **cand_model;
  const int64_t vocab = ref.config().vocab_size;

  const int batch = options.batch;
  const int prompt = static_cast<int>(options.prompt.size());
  PagedKvLayout layout;
  layout.block_size = 16;
  const int blocks_per_seq =
      (prompt + options.decode_steps + layout.block_size - 1) / layout.block_size;
  layout.num_blocks = batch * blocks_per_seq;
  layout.kv_dim = static_cast<int64_t>(ref.config().n_kv_heads) * ref.config().head_dim;
  absl::StatusOr<std::unique_ptr<KvCache>> ref_cache = ref.NewPagedCache(layout);
  RETURN_IF_ERROR(Named(ref_cache.status(), "reference"));
  absl::StatusOr<std::unique_ptr<KvCache>> cand_cache = cand.NewPagedCache(layout);
  RETURN_IF_ERROR(Named(cand_cache.status(), "candidate"));

  std::vector<std::vector<int>> tokens(batch);
  std::vector<std::vector<KvBlockId>> tables(batch);
  for (int b = 0; b < batch; ++b) {
    tokens[b] = options.prompt;
    std::rotate(tokens[b].begin(), tokens[b].begin() + b % prompt, tokens[b].end());
    for (int i = 0; i < blocks_per_seq; ++i) tables[b].push_back(b * blocks_per_seq + i);
  }

  ModelParityReport report;
  std::vector<float> ref_logits, cand_logits;
  std::vector<StepChunk> chunks(batch);
  for (int step = 0; step <= options.decode_steps; ++step) {
    for (int b = 0; b < batch; ++b) {
      const int n = static_cast<int>(tokens[b].size());
      StepChunk& c = chunks[b];
      c = StepChunk::ForTokens(step == 0 ? absl::MakeConstSpan(tokens[b])
                                         : absl::MakeConstSpan(tokens[b]).subspan(n - 1, 1),
                               step == 0 ? 0 : n - 1, tables[b], /*wants_logits=*/step > 0);
      c.all_logits = step == 0;
    }
    RETURN_IF_ERROR(Named(ref.ForwardBatch(ref_cache->get(), chunks, &ref_logits), "reference"));
    RETURN_IF_ERROR(Named(cand.ForwardBatch(cand_cache->get(), chunks, &cand_logits), "candidate"));
    Compare(ref_logits, cand_logits, vocab, options.clear_margin, &report);
    if (step == options.decode_steps) break;
    // The reference's greedy token of each sequence (its last logits row).
    int64_t row = 0;
    for (int b = 0; b < batch; ++b) {
      row += step == 0 ? prompt : 1;
      const float* last = ref_logits.data() + (row - 1) * vocab;
      tokens[b].push_back(static_cast<int>(std::max_element(last, last + vocab) - last));
    }
  }
  return report;
}

}  // namespace memserve
