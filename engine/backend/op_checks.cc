#include "engine/backend/op_checks.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace memserve {
namespace {

absl::Status ShapeError(const char* op, const char* what, const Tensor& t,
                        const std::string& want) {
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", what, " is ", t.DebugString(), "; expected ", want));
}

bool IsFloatCache(DType t) { return t == DType::kF32 || t == DType::kBF16; }

}  // namespace

absl::Status CheckOperand(const Backend* backend, const Tensor& t, DType dtype, const char* what) {
  if (t.buffer == nullptr || t.buffer->backend() != backend) {
    return absl::InvalidArgumentError(
        absl::StrCat(backend->name(), " backend: ", what, " is not a tensor of this backend"));
  }
  if (t.dtype != dtype || !t.InBounds()) {
    return absl::InvalidArgumentError(absl::StrCat(
        backend->name(), " backend: ", what, " is ", t.DebugString(), " at offset ", t.offset,
        " of a ", t.buffer->size(), "-byte buffer; expected ", DTypeName(dtype)));
  }
  return absl::OkStatus();
}

absl::Status CheckWeight(const Backend* backend, const Tensor& t, const char* what) {
  if (t.buffer != nullptr && t.dtype != DType::kF32 && t.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(backend->name(), " backend: ", what, " is ",
                                                   t.DebugString(), "; expected F32 or BF16"));
  }
  return CheckOperand(backend, t, t.dtype, what);
}

absl::Status CheckMatMulShapes(const Tensor& x, const Tensor& w, const Tensor& bias,
                               const Tensor& y) {
  if (w.rank != 2) return ShapeError("MatMul", "w", w, "[out, in]");
  const int64_t out = w.shape[0];
  const int64_t in = w.shape[1];
  if (x.rank != 2 || x.shape[1] != in) {
    return ShapeError("MatMul", "x", x, absl::StrCat("[T, ", in, "]"));
  }
  const int64_t n_tokens = x.shape[0];
  if (y.rank != 2 || y.shape[0] != n_tokens || y.shape[1] != out) {
    return ShapeError("MatMul", "y", y, absl::StrCat("[", n_tokens, ", ", out, "]"));
  }
  if (bias.present() && bias.numel() != out) {
    return ShapeError("MatMul", "bias", bias, absl::StrCat("[", out, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckRmsNormShapes(const Tensor& x, const Tensor& weight, const Tensor& y) {
  const int64_t dim = weight.numel();
  if (x.rank != 2 || x.shape[1] != dim) {
    return ShapeError("RmsNorm", "x", x, absl::StrCat("[T, ", dim, "]"));
  }
  if (y.rank != 2 || y.shape[0] != x.shape[0] || y.shape[1] != dim) {
    return ShapeError("RmsNorm", "y", y, x.DebugString());
  }
  return absl::OkStatus();
}

absl::Status CheckEmbeddingShapes(const Tensor& table, const Tensor& ids, const Tensor& y) {
  if (table.rank != 2) return ShapeError("Embedding", "table", table, "[vocab, dim]");
  const int64_t n = ids.numel();
  if (y.rank != 2 || y.shape[0] != n || y.shape[1] != table.shape[1]) {
    return ShapeError("Embedding", "y", y, absl::StrCat("[", n, ", ", table.shape[1], "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckRopeShapes(const Tensor& x, const Tensor& positions, const Tensor& rope) {
  if (x.rank != 3 || x.shape[2] % 2 != 0) {
    return ShapeError("Rope", "x", x, "[T, n_heads, head_dim] with head_dim even");
  }
  const int64_t half = x.shape[2] / 2;
  if (rope.rank != 3 || rope.shape[0] != 2 || rope.shape[2] != half) {
    return ShapeError("Rope", "rope", rope, absl::StrCat("[2, max_positions, ", half, "]"));
  }
  if (positions.numel() != x.shape[0]) {
    return ShapeError("Rope", "positions", positions, absl::StrCat("[", x.shape[0], "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckWriteKvShapes(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                                const Tensor& k_cache, const Tensor& v_cache) {
  if (k.rank != 2) return ShapeError("WriteKv", "k", k, "[T, kv_dim]");
  const int64_t n = k.shape[0];
  const int64_t kv_dim = k.shape[1];
  if (v.rank != 2 || v.shape[0] != n || v.shape[1] != kv_dim) {
    return ShapeError("WriteKv", "v", v, k.DebugString());
  }
  if (kv_rows.numel() != n) {
    return ShapeError("WriteKv", "kv_rows", kv_rows, absl::StrCat("[", n, "]"));
  }
  if (k_cache.rank != 2 || k_cache.shape[1] != kv_dim || !IsFloatCache(k_cache.dtype)) {
    return ShapeError("WriteKv", "k_cache", k_cache,
                      absl::StrCat("F32 or BF16 [rows, ", kv_dim, "]"));
  }
  if (v_cache.rank != 2 || v_cache.shape[0] != k_cache.shape[0] || v_cache.shape[1] != kv_dim ||
      v_cache.dtype != k_cache.dtype) {
    return ShapeError("WriteKv", "v_cache", v_cache, k_cache.DebugString());
  }
  return absl::OkStatus();
}

absl::Status CheckAttentionShapes(const AttentionShape& shape, const BatchDescriptor& batch,
                                  const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                  const Tensor& out) {
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0 ||
      shape.head_dim <= 0 || shape.sliding_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Attention: n_heads=", shape.n_heads, " n_kv_heads=", shape.n_kv_heads,
                     " head_dim=", shape.head_dim, " sliding_window=", shape.sliding_window));
  }
  const int64_t q_dim = static_cast<int64_t>(shape.n_heads) * shape.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(shape.n_kv_heads) * shape.head_dim;
  if (q.numel() != batch.n_tokens * q_dim) {
    return ShapeError("Attention", "q", q, absl::StrCat("[", batch.n_tokens, ", ", q_dim, "]"));
  }
  if (out.numel() != batch.n_tokens * q_dim) {
    return ShapeError("Attention", "out", out, absl::StrCat("[", batch.n_tokens, ", ", q_dim, "]"));
  }
  if (k_cache.rank != 2 || k_cache.shape[1] != kv_dim || !IsFloatCache(k_cache.dtype) ||
      v_cache.rank != 2 || v_cache.shape[0] != k_cache.shape[0] || v_cache.shape[1] != kv_dim ||
      v_cache.dtype != k_cache.dtype) {
    return ShapeError("Attention", "k_cache", k_cache,
                      absl::StrCat("F32 or BF16 [rows, ", kv_dim, "] like v_cache"));
  }
  if (batch.n_tokens < 1 || batch.n_seqs < 1 || batch.n_seqs > batch.n_tokens ||
      batch.block_size <= 0 || batch.max_blocks <= 0 ||
      batch.seq_starts.numel() != batch.n_seqs + 1 ||
      batch.block_tables.numel() != static_cast<int64_t>(batch.n_seqs) * batch.max_blocks ||
      batch.positions.numel() != batch.n_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Attention: inconsistent batch descriptor (", batch.n_seqs, " sequences, ", batch.n_tokens,
        " tokens, block_size ", batch.block_size, ", max_blocks ", batch.max_blocks, ")"));
  }
  if (k_cache.shape[0] % batch.block_size != 0) {
    return ShapeError("Attention", "k_cache", k_cache,
                      absl::StrCat("a whole number of ", batch.block_size, "-row blocks"));
  }
  return absl::OkStatus();
}

absl::Status CheckSameSize(const char* op, const Tensor& a, const Tensor& b, const char* b_name) {
  if (b.numel() != a.numel()) return ShapeError(op, b_name, b, a.DebugString());
  return absl::OkStatus();
}

absl::Status CheckSigmoidGateRowsShapes(const Tensor& gate, const Tensor& x) {
  if (x.rank != 2 || gate.numel() != x.shape[0]) {
    return ShapeError("SigmoidGateRows", "gate", gate,
                      absl::StrCat("[", x.rank >= 1 ? x.shape[0] : 0, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckMemorySelectShapes(const MemorySelectArgs& a) {
  if (a.heads <= 0 || a.n_keys <= 0 || a.knn < 1 || a.knn > a.n_keys || a.k_dim <= 0 ||
      a.k_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MemorySelect: heads=", a.heads, " n_keys=", a.n_keys, " knn=", a.knn, " k_dim=", a.k_dim));
  }
  const int64_t q_stride = static_cast<int64_t>(a.heads) * a.k_dim;
  if (a.queries.rank != 2 || a.queries.shape[1] != q_stride) {
    return ShapeError("MemorySelect", "queries", a.queries, absl::StrCat("[T, ", q_stride, "]"));
  }
  if (a.keys.numel() != 2LL * a.heads * a.n_keys * (a.k_dim / 2)) {
    return ShapeError("MemorySelect", "keys", a.keys,
                      absl::StrCat("[", 2LL * a.heads * a.n_keys, ", ", a.k_dim / 2, "]"));
  }
  const int64_t picks = a.queries.shape[0] * a.heads * a.knn;
  const std::string want = absl::StrCat("[", a.queries.shape[0], ", ", a.heads, ", ", a.knn, "]");
  if (a.rows.numel() != picks) return ShapeError("MemorySelect", "rows", a.rows, want);
  if (a.weights.numel() != picks) return ShapeError("MemorySelect", "weights", a.weights, want);
  if (a.scores.present() && a.scores.numel() != picks) {
    return ShapeError("MemorySelect", "scores", a.scores, want);
  }
  return absl::OkStatus();
}

absl::Status CheckValueGatherShapes(const Tensor& values, const Tensor& rows, const Tensor& weights,
                                    int64_t col_begin, int64_t col_end, const Tensor& out) {
  if (values.rank != 2) return ShapeError("ValueGather", "values", values, "[rows, v_dim]");
  const int64_t v_dim = values.shape[1];
  if (out.rank != 2 || out.shape[1] != v_dim) {
    return ShapeError("ValueGather", "out", out, absl::StrCat("[T, ", v_dim, "]"));
  }
  const int64_t n_tokens = out.shape[0];
  if (n_tokens == 0 || rows.numel() % n_tokens != 0 || rows.numel() != weights.numel()) {
    return ShapeError("ValueGather", "rows", rows,
                      absl::StrCat("[", n_tokens, ", heads, knn] like weights"));
  }
  if (col_begin < 0 || col_begin > col_end || col_end > v_dim) {
    return absl::InvalidArgumentError(absl::StrCat("ValueGather: columns [", col_begin, ", ",
                                                   col_end, ") are outside [0, ", v_dim, ")"));
  }
  return absl::OkStatus();
}

}  // namespace memserve
