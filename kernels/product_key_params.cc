// The host side of kernels/product_key.h that needs no CUDA: parameter
// validation, the score kernel's split, the lookup's workspace size. Plain
// C++ (product_key_params_test runs it on the CPU).
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/product_key.h"

namespace memserve::kernels {
namespace {

absl::Status Invalid(const char* params, const char* field, const char* rule, int64_t got) {
  return absl::InvalidArgumentError(absl::StrCat(params, ".", field, " ", rule, ", got ", got));
}

absl::Status CheckSelectShape(const char* params, int64_t n_tokens, int heads, int n_keys) {
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return Invalid(params, "n_tokens", "must be in [0, 2^31 - 1]", n_tokens);
  }
  if (heads < 1) return Invalid(params, "heads", "must be >= 1", heads);
  if (n_tokens * heads > INT32_MAX) {
    return Invalid(params, "n_tokens * heads", "must be <= 2^31 - 1", n_tokens * heads);
  }
  if (n_keys < 1 || n_keys > kProductKeyMaxKeys) {
    return Invalid(params, "n_keys", "must be in [1, 8192]", n_keys);
  }
  return absl::OkStatus();
}

absl::Status CheckKnn(const char* params, int knn, int n_keys) {
  const int most = n_keys < kProductKeyMaxKnn ? n_keys : kProductKeyMaxKnn;
  if (knn < 1 || knn > most) {
    return absl::InvalidArgumentError(absl::StrCat(params, ".knn must be in [1, min(n_keys, ",
                                                   kProductKeyMaxKnn, ")] = [1, ", most, "], got ",
                                                   knn));
  }
  return absl::OkStatus();
}

absl::Status CheckKDim(const char* params, int k_dim) {
  if (k_dim < 2 || k_dim % 2 != 0 || k_dim / 2 > kProductKeyMaxHalfDim) {
    return Invalid(params, "k_dim", "must be even and in [2, 16384]", k_dim);
  }
  return absl::OkStatus();
}

constexpr size_t kAlign = 256;
size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

absl::Status ProductKeyScoresParams::Validate() const {
  constexpr const char* kName = "ProductKeyScoresParams";
  if (queries == nullptr)
    return absl::InvalidArgumentError("ProductKeyScoresParams.queries is null");
  if (keys == nullptr) return absl::InvalidArgumentError("ProductKeyScoresParams.keys is null");
  if (subkey_scores == nullptr) {
    return absl::InvalidArgumentError("ProductKeyScoresParams.subkey_scores is null");
  }
  absl::Status s = CheckSelectShape(kName, n_tokens, heads, n_keys);
  if (!s.ok()) return s;
  if (n_tokens * heads * 2 > INT32_MAX) {
    return Invalid(kName, "n_tokens * heads * 2", "must be <= 2^31 - 1 (the grid)",
                   n_tokens * heads * 2);
  }
  s = CheckKDim(kName, k_dim);
  if (!s.ok()) return s;
  if (query_stride != 0 && query_stride < static_cast<int64_t>(heads) * k_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("ProductKeyScoresParams.query_stride must be 0 or >= heads * k_dim = ",
                     static_cast<int64_t>(heads) * k_dim, ", got ", query_stride));
  }
  return absl::OkStatus();
}

int ProductKeyScoreSplits(int64_t n_tokens, int heads, int n_keys) {
  constexpr int64_t kTargetBlocks = 528;  // 132 SMs x 4
  constexpr int kMinKeysPerSplit = 64;
  const int64_t groups = n_tokens * heads * 2;
  if (groups <= 0) return 1;
  int64_t splits = (kTargetBlocks + groups - 1) / groups;
  const int64_t most = (n_keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  if (splits > most) splits = most;
  return splits < 1 ? 1 : static_cast<int>(splits);
}

absl::Status ProductKeySelectParams::Validate() const {
  constexpr const char* kName = "ProductKeySelectParams";
  if (subkey_scores == nullptr) {
    return absl::InvalidArgumentError("ProductKeySelectParams.subkey_scores is null");
  }
  if (rows == nullptr) return absl::InvalidArgumentError("ProductKeySelectParams.rows is null");
  if (weights == nullptr) {
    return absl::InvalidArgumentError("ProductKeySelectParams.weights is null");
  }
  absl::Status s = CheckSelectShape(kName, n_tokens, heads, n_keys);
  if (!s.ok()) return s;
  return CheckKnn(kName, knn, n_keys);
}

bool ProductKeyGatherParams::vectorized() const {
  const int64_t size = static_cast<int64_t>(ElementSize(values_type));
  const int64_t per16 = 16 / size;
  return reinterpret_cast<uintptr_t>(values) % 16 == 0 && col_begin % per16 == 0 &&
         effective_row_stride() % per16 == 0;
}

absl::Status ProductKeyGatherParams::Validate() const {
  constexpr const char* kName = "ProductKeyGatherParams";
  if (values == nullptr) return absl::InvalidArgumentError("ProductKeyGatherParams.values is null");
  if (rows == nullptr) return absl::InvalidArgumentError("ProductKeyGatherParams.rows is null");
  if (weights == nullptr) {
    return absl::InvalidArgumentError("ProductKeyGatherParams.weights is null");
  }
  if (out == nullptr) return absl::InvalidArgumentError("ProductKeyGatherParams.out is null");
  if (table_rows < 1) return Invalid(kName, "table_rows", "must be >= 1", table_rows);
  if (col_begin < 0) return Invalid(kName, "col_begin", "must be >= 0", col_begin);
  if (col_end <= col_begin) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ProductKeyGatherParams.col_end must be > col_begin = ", col_begin, ", got ", col_end));
  }
  if (col_end - col_begin > (int64_t{1} << 23)) {
    return Invalid(kName, "col_end - col_begin", "must be <= 2^23", col_end - col_begin);
  }
  if (row_stride != 0 && row_stride < col_end) {
    return absl::InvalidArgumentError(
        absl::StrCat("ProductKeyGatherParams.row_stride must be 0 or >= col_end = ", col_end,
                     ", got ", row_stride));
  }
  if (picks < 1 || picks > (1 << 20)) {
    return Invalid(kName, "picks", "must be in [1, 2^20]", picks);
  }
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return Invalid(kName, "n_tokens", "must be in [0, 2^31 - 1]", n_tokens);
  }
  if (out_stride != 0 && out_stride < col_end - col_begin) {
    return absl::InvalidArgumentError(
        absl::StrCat("ProductKeyGatherParams.out_stride must be 0 or >= col_end - col_begin = ",
                     col_end - col_begin, ", got ", out_stride));
  }
  return absl::OkStatus();
}

absl::Status ProductKeyLookupParams::Validate() const {
  ProductKeyScoresParams scores_p;
  scores_p.queries = queries;
  scores_p.keys = keys;
  scores_p.subkey_scores = reinterpret_cast<float*>(1);  // the workspace's, checked below
  scores_p.n_tokens = n_tokens;
  scores_p.heads = heads;
  scores_p.n_keys = n_keys;
  scores_p.k_dim = k_dim;
  scores_p.query_stride = query_stride;
  absl::Status s = scores_p.Validate();
  if (!s.ok())
    return absl::InvalidArgumentError(absl::StrCat("ProductKeyLookupParams: ", s.message()));
  s = CheckKnn("ProductKeyLookupParams", knn, n_keys);
  if (!s.ok()) return s;
  if ((rows == nullptr) != (weights == nullptr)) {
    return absl::InvalidArgumentError(
        "ProductKeyLookupParams: rows and weights are given together or not at all");
  }
  ProductKeyGatherParams g;
  g.values = values;
  g.values_type = values_type;
  g.table_rows = table_rows;
  g.row_stride = row_stride;
  g.col_begin = col_begin;
  g.col_end = col_end;
  g.rows = reinterpret_cast<const int64_t*>(8);
  g.weights = reinterpret_cast<const float*>(8);
  g.picks = heads * knn;
  g.n_tokens = n_tokens;
  g.out = out;
  g.out_type = out_type;
  g.out_stride = out_stride;
  s = g.Validate();
  if (!s.ok())
    return absl::InvalidArgumentError(absl::StrCat("ProductKeyLookupParams: ", s.message()));
  const size_t need = ProductKeyLookupWorkspaceBytes(*this);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ProductKeyLookupParams.workspace must hold ProductKeyLookupWorkspaceBytes = ", need,
        " bytes, got ", workspace == nullptr ? 0 : workspace_bytes));
  }
  return absl::OkStatus();
}

size_t ProductKeyLookupWorkspaceBytes(const ProductKeyLookupParams& p) {
  if (p.n_tokens <= 0 || p.heads <= 0 || p.n_keys <= 0 || p.knn <= 0) return 0;
  const size_t scores = static_cast<size_t>(p.n_tokens) * p.heads * 2 * p.n_keys * sizeof(float);
  const size_t picks = static_cast<size_t>(p.n_tokens) * p.heads * p.knn;
  size_t bytes = AlignUp(scores);
  if (p.rows == nullptr) bytes += AlignUp(picks * sizeof(int64_t)) + AlignUp(picks * sizeof(float));
  return bytes;
}

}  // namespace memserve::kernels
