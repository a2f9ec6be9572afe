#include "engine/backend/testing/tracing_backend.h"

#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

// A buffer of the tracing backend: the inner backend's buffer inside.
class TracedBuffer : public Buffer {
 public:
  TracedBuffer(const Backend* owner, std::unique_ptr<Buffer> inner)
      : Buffer(owner, inner->device(), inner->type_name(), inner->size()),
        inner_(std::move(inner)) {}
  Buffer* inner() const { return inner_.get(); }

 private:
  std::unique_ptr<Buffer> inner_;
};

}  // namespace

TracingBackend::TracingBackend(std::unique_ptr<Backend> inner)
    : inner_(std::move(inner)), name_(absl::StrCat("tracing(", inner_->name(), ")")) {}

TracingBackend::~TracingBackend() = default;

std::unique_ptr<Buffer> TracingBackend::Wrap(std::unique_ptr<Buffer> inner, Tensor* tensor) {
  ++counters_.buffers;
  auto wrapped = std::make_unique<TracedBuffer>(this, std::move(inner));
  if (tensor != nullptr) tensor->buffer = wrapped.get();
  return wrapped;
}

absl::Status TracingBackend::Unwrap(const Tensor& t, const char* what, Tensor* inner,
                                    bool optional) const {
  *inner = t;
  if (t.buffer == nullptr && optional) return absl::OkStatus();
  if (t.buffer == nullptr || t.buffer->backend() != this) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": ", what, " is not on a buffer of this backend"));
  }
  inner->buffer = static_cast<const TracedBuffer*>(t.buffer)->inner();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Buffer>> TracingBackend::AllocateBuffer(size_t bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> inner, inner_->AllocateBuffer(bytes));
  // Poison: NaN in every whole float (and 0xff in any tail byte).
  const std::vector<float> nan(bytes / sizeof(float), std::numeric_limits<float>::quiet_NaN());
  if (!nan.empty()) {
    RETURN_IF_ERROR(inner_->Upload(
        nan.data(), Tensor::Of(inner.get(), DType::kF32, {static_cast<int64_t>(nan.size())})));
  }
  return Wrap(std::move(inner), nullptr);
}

absl::StatusOr<std::unique_ptr<Buffer>> TracingBackend::WrapHostMemory(const void* data,
                                                                       size_t bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> inner, inner_->WrapHostMemory(data, bytes));
  return Wrap(std::move(inner), nullptr);
}

absl::StatusOr<std::unique_ptr<Buffer>> TracingBackend::PlaceWeight(const TensorView& w,
                                                                    WeightUse use, Tensor* tensor) {
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> inner, inner_->PlaceWeight(w, use, tensor));
  return Wrap(std::move(inner), tensor);
}

absl::Status TracingBackend::Upload(const void* src, const Tensor& dst) {
  Tensor d;
  RETURN_IF_ERROR(Unwrap(dst, "Upload destination", &d));
  ++counters_.uploads;
  counters_.upload_bytes += static_cast<int64_t>(dst.nbytes());
  return inner_->Upload(src, d);
}

absl::Status TracingBackend::Download(const Tensor& src, void* dst) {
  Tensor s;
  RETURN_IF_ERROR(Unwrap(src, "Download source", &s));
  ++counters_.downloads;
  counters_.download_bytes += static_cast<int64_t>(src.nbytes());
  return inner_->Download(s, dst);
}

absl::Status TracingBackend::MatMul(const Tensor& x, const Tensor& w, const Tensor& bias,
                                    const Tensor& y) {
  Tensor x2, w2, b2, y2;
  RETURN_IF_ERROR(Unwrap(x, "MatMul x", &x2));
  RETURN_IF_ERROR(Unwrap(w, "MatMul w", &w2));
  RETURN_IF_ERROR(Unwrap(bias, "MatMul bias", &b2, /*optional=*/true));
  RETURN_IF_ERROR(Unwrap(y, "MatMul y", &y2));
  ++counters_.ops;
  return inner_->MatMul(x2, w2, b2, y2);
}

absl::Status TracingBackend::RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                                     const Tensor& y) {
  Tensor x2, w2, y2;
  RETURN_IF_ERROR(Unwrap(x, "RmsNorm x", &x2));
  RETURN_IF_ERROR(Unwrap(weight, "RmsNorm weight", &w2));
  RETURN_IF_ERROR(Unwrap(y, "RmsNorm y", &y2));
  ++counters_.ops;
  return inner_->RmsNorm(x2, w2, eps, y2);
}

absl::Status TracingBackend::Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) {
  Tensor t2, i2, y2;
  RETURN_IF_ERROR(Unwrap(table, "Embedding table", &t2));
  RETURN_IF_ERROR(Unwrap(ids, "Embedding ids", &i2));
  RETURN_IF_ERROR(Unwrap(y, "Embedding y", &y2));
  ++counters_.ops;
  return inner_->Embedding(t2, i2, y2);
}

absl::Status TracingBackend::Rope(const Tensor& x, const Tensor& positions, const Tensor& rope) {
  Tensor x2, p2, r2;
  RETURN_IF_ERROR(Unwrap(x, "Rope x", &x2));
  RETURN_IF_ERROR(Unwrap(positions, "Rope positions", &p2));
  RETURN_IF_ERROR(Unwrap(rope, "Rope table", &r2));
  ++counters_.ops;
  return inner_->Rope(x2, p2, r2);
}

absl::Status TracingBackend::WriteKv(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                                     const Tensor& k_cache, const Tensor& v_cache) {
  Tensor k2, v2, r2, kc2, vc2;
  RETURN_IF_ERROR(Unwrap(k, "WriteKv k", &k2));
  RETURN_IF_ERROR(Unwrap(v, "WriteKv v", &v2));
  RETURN_IF_ERROR(Unwrap(kv_rows, "WriteKv kv_rows", &r2));
  RETURN_IF_ERROR(Unwrap(k_cache, "WriteKv k_cache", &kc2));
  RETURN_IF_ERROR(Unwrap(v_cache, "WriteKv v_cache", &vc2));
  ++counters_.ops;
  return inner_->WriteKv(k2, v2, r2, kc2, vc2);
}

absl::Status TracingBackend::Attention(const AttentionShape& shape, const BatchDescriptor& batch,
                                       const Tensor& q, const Tensor& k_cache,
                                       const Tensor& v_cache, const Tensor& out) {
  BatchDescriptor b = batch;
  RETURN_IF_ERROR(Unwrap(batch.token_ids, "batch token_ids", &b.token_ids, true));
  RETURN_IF_ERROR(Unwrap(batch.positions, "batch positions", &b.positions));
  RETURN_IF_ERROR(Unwrap(batch.kv_rows, "batch kv_rows", &b.kv_rows, true));
  RETURN_IF_ERROR(Unwrap(batch.seq_starts, "batch seq_starts", &b.seq_starts));
  RETURN_IF_ERROR(Unwrap(batch.block_tables, "batch block_tables", &b.block_tables));
  Tensor q2, kc2, vc2, o2;
  RETURN_IF_ERROR(Unwrap(q, "Attention q", &q2));
  RETURN_IF_ERROR(Unwrap(k_cache, "Attention k_cache", &kc2));
  RETURN_IF_ERROR(Unwrap(v_cache, "Attention v_cache", &vc2));
  RETURN_IF_ERROR(Unwrap(out, "Attention out", &o2));
  ++counters_.ops;
  return inner_->Attention(shape, b, q2, kc2, vc2, o2);
}

absl::Status TracingBackend::SwiGlu(const Tensor& a, const Tensor& b, const Tensor& y) {
  Tensor a2, b2, y2;
  RETURN_IF_ERROR(Unwrap(a, "SwiGlu a", &a2));
  RETURN_IF_ERROR(Unwrap(b, "SwiGlu b", &b2));
  RETURN_IF_ERROR(Unwrap(y, "SwiGlu y", &y2));
  ++counters_.ops;
  return inner_->SwiGlu(a2, b2, y2);
}

absl::Status TracingBackend::Add(const Tensor& x, const Tensor& y) {
  Tensor x2, y2;
  RETURN_IF_ERROR(Unwrap(x, "Add x", &x2));
  RETURN_IF_ERROR(Unwrap(y, "Add y", &y2));
  ++counters_.ops;
  return inner_->Add(x2, y2);
}

absl::Status TracingBackend::SigmoidGateRows(const Tensor& gate, const Tensor& x) {
  Tensor g2, x2;
  RETURN_IF_ERROR(Unwrap(gate, "SigmoidGateRows gate", &g2));
  RETURN_IF_ERROR(Unwrap(x, "SigmoidGateRows x", &x2));
  ++counters_.ops;
  return inner_->SigmoidGateRows(g2, x2);
}

absl::Status TracingBackend::MemorySelect(const MemorySelectArgs& args) {
  MemorySelectArgs a = args;
  RETURN_IF_ERROR(Unwrap(args.queries, "MemorySelect queries", &a.queries));
  RETURN_IF_ERROR(Unwrap(args.keys, "MemorySelect keys", &a.keys));
  RETURN_IF_ERROR(Unwrap(args.rows, "MemorySelect rows", &a.rows));
  RETURN_IF_ERROR(Unwrap(args.weights, "MemorySelect weights", &a.weights));
  RETURN_IF_ERROR(Unwrap(args.scores, "MemorySelect scores", &a.scores, /*optional=*/true));
  ++counters_.ops;
  return inner_->MemorySelect(a);
}

absl::Status TracingBackend::ValueGather(const Tensor& values, const Tensor& rows,
                                         const Tensor& weights, int64_t col_begin, int64_t col_end,
                                         const Tensor& out) {
  Tensor v2, r2, w2, o2;
  RETURN_IF_ERROR(Unwrap(values, "ValueGather values", &v2));
  RETURN_IF_ERROR(Unwrap(rows, "ValueGather rows", &r2));
  RETURN_IF_ERROR(Unwrap(weights, "ValueGather weights", &w2));
  RETURN_IF_ERROR(Unwrap(out, "ValueGather out", &o2));
  ++counters_.ops;
  return inner_->ValueGather(v2, r2, w2, col_begin, col_end, o2);
}

}  // namespace memserve
