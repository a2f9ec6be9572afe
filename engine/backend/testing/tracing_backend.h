// TracingBackend: a Backend that forwards to another one and checks how it
// is used, for tests that must prove the model touches memory only through
// the backend:
//   - every buffer it hands out wraps one of the inner backend's, and every
//     op operand must be one of its own buffers (else InvalidArgument), so a
//     tensor made anywhere else cannot reach an op;
//   - new buffers are filled with NaN (through the inner backend), so a read
//     of memory no op or upload wrote poisons the result;
//   - it counts Upload and Download calls and bytes, so a test can assert
//     "one descriptor upload and one logits download per step".
// Works over any backend (CPU today, CUDA later). Not thread-safe for ops
// (like every Backend); the counters are plain fields.
#ifndef MEMSERVE_ENGINE_BACKEND_TESTING_TRACING_BACKEND_H_
#define MEMSERVE_ENGINE_BACKEND_TESTING_TRACING_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "engine/backend/backend.h"

namespace memserve {

class TracingBackend : public Backend {
 public:
  struct Counters {
    int64_t uploads = 0;
    int64_t downloads = 0;
    int64_t upload_bytes = 0;
    int64_t download_bytes = 0;
    int64_t ops = 0;
    int64_t buffers = 0;  // allocated, wrapped or placed
  };

  explicit TracingBackend(std::unique_ptr<Backend> inner);
  ~TracingBackend() override;

  const char* name() const override { return name_.c_str(); }
  Device device() const override { return inner_->device(); }
  const Counters& counters() const { return counters_; }
  void ResetCounters() { counters_ = Counters(); }

  absl::StatusOr<std::unique_ptr<Buffer>> AllocateBuffer(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> WrapHostMemory(const void* data, size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> PlaceWeight(const TensorView& w, WeightUse use,
                                                      Tensor* tensor) override;
  absl::Status Upload(const void* src, const Tensor& dst) override;
  absl::Status Download(const Tensor& src, void* dst) override;
  absl::Status Synchronize() override { return inner_->Synchronize(); }

  absl::Status MatMul(const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& y) override;
  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override;
  absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) override;
  absl::Status Rope(const Tensor& x, const Tensor& positions, const Tensor& rope) override;
  absl::Status WriteKv(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                       const Tensor& k_cache, const Tensor& v_cache) override;
  absl::Status Attention(const AttentionShape& shape, const BatchDescriptor& batch, const Tensor& q,
                         const Tensor& k_cache, const Tensor& v_cache, const Tensor& out) override;
  absl::Status SwiGlu(const Tensor& a, const Tensor& b, const Tensor& y) override;
  absl::Status Add(const Tensor& x, const Tensor& y) override;
  absl::Status SigmoidGateRows(const Tensor& gate, const Tensor& x) override;
  absl::Status MemorySelect(const MemorySelectArgs& args) override;
  absl::Status ValueGather(const Tensor& values, const Tensor& rows, const Tensor& weights,
                           int64_t col_begin, int64_t col_end, const Tensor& out) override;

 private:
  // `t` on the inner backend's buffer; InvalidArgument naming `what` unless
  // t is absent (and `optional`) or on a buffer of this backend.
  absl::Status Unwrap(const Tensor& t, const char* what, Tensor* inner,
                      bool optional = false) const;
  // Wraps an inner buffer (and rebinds *tensor, when given, to the wrapper).
  std::unique_ptr<Buffer> Wrap(std::unique_ptr<Buffer> inner, Tensor* tensor);

  std::unique_ptr<Backend> inner_;
  std::string name_;
  Counters counters_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_TESTING_TRACING_BACKEND_H_
