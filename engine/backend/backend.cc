#include "engine/backend/backend.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace memserve {

absl::StatusOr<std::unique_ptr<Buffer>> Backend::PlaceWeight(const TensorView& w, WeightUse use,
                                                             Tensor* tensor) {
  (void)use;
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buffer, WrapHostMemory(w.data, w.nbytes()));
  *tensor = TensorFromView(buffer.get(), w);
  return buffer;
}

absl::StatusOr<std::unique_ptr<Buffer>> Backend::PlaceHostTable(const TensorView& w,
                                                                Tensor* tensor) {
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buffer, WrapHostMemory(w.data, w.nbytes()));
  *tensor = TensorFromView(buffer.get(), w);
  return buffer;
}

absl::StatusOr<std::unique_ptr<ShardedMemory>> Backend::PlaceShardedTables(
    const std::vector<TensorView>& tables, const std::vector<MemoryShard>& shards) {
  (void)tables;
  (void)shards;
  return absl::UnimplementedError(absl::StrCat(
      "--memory_placement sharded: the ", name(),
      " backend keeps the value tables in one place (use --memory_shards for virtual shards)"));
}

absl::Status Backend::MemoryLookup(const MemoryLookupArgs& a) {
  if (a.queries.rank != 2 || a.knn < 1 || a.heads < 1) {
    return absl::InvalidArgumentError("MemoryLookup: queries must be [n_tokens, heads * k_dim]");
  }
  const int64_t n_tokens = a.queries.shape[0];
  const int64_t picks = n_tokens * a.heads * a.knn;
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> rows, AllocateBuffer(picks * sizeof(int64_t)));
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> weights, AllocateBuffer(picks * sizeof(float)));
  MemorySelectArgs s;
  s.heads = a.heads;
  s.n_keys = a.n_keys;
  s.knn = a.knn;
  s.k_dim = a.k_dim;
  s.queries = a.queries;
  s.keys = a.keys;
  s.rows = Tensor::Of(rows.get(), DType::kI64, {n_tokens, a.heads, a.knn});
  s.weights = Tensor::Of(weights.get(), DType::kF32, {n_tokens, a.heads, a.knn});
  s.scores = a.out_scores;
  RETURN_IF_ERROR(MemorySelect(s));
  RETURN_IF_ERROR(ValueGather(a.values, s.rows, s.weights, 0, a.v_dim, a.out));
  if (a.out_indices.present()) {
    // Through the host: a test-and-tools path, not the model's.
    std::vector<int64_t> host(static_cast<size_t>(picks));
    RETURN_IF_ERROR(Download(s.rows, host.data()));
    RETURN_IF_ERROR(Upload(host.data(), a.out_indices));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Backend::StepGraph>> Backend::CaptureStep(
    const std::function<absl::Status()>& ops) {
  (void)ops;
  return absl::UnimplementedError(absl::StrCat("the ", name(), " backend has no step graphs"));
}

absl::Status Backend::ReplayStep(StepGraph& graph) {
  (void)graph;
  return absl::UnimplementedError(absl::StrCat("the ", name(), " backend has no step graphs"));
}

Tensor TensorFromView(Buffer* buffer, const TensorView& w) {
  Tensor t;
  t.buffer = buffer;
  t.dtype = w.dtype;
  for (int64_t d : w.shape) {
    if (t.rank == Tensor::kMaxRank) break;
    t.shape[t.rank++] = d;
  }
  return t;
}

}  // namespace memserve
