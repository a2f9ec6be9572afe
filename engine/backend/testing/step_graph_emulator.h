// StepGraphEmulator: a Backend that forwards to another one (the CPU) and
// adds step graphs the way a device backend has them, so the model's
// decode-graph path (padding to a bucket, the per-bucket descriptor buffer,
// capture after an eager run, replay) is tested without a GPU:
//   - CaptureStep records the ops `ops` issues (their operands by value)
//     without running them; ReplayStep runs the recorded ops in order, on
//     whatever bytes the operands hold then;
//   - during a capture, Upload, Download, Synchronize and allocation are
//     refused (FailedPrecondition), as on CUDA;
//   - WriteKv skips token rows outside the cache, as a device does (the
//     padding tokens' row is -1), instead of failing.
// Buffers are the inner backend's own. Test-only; not thread-safe.
#ifndef MEMSERVE_ENGINE_BACKEND_TESTING_STEP_GRAPH_EMULATOR_H_
#define MEMSERVE_ENGINE_BACKEND_TESTING_STEP_GRAPH_EMULATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/backend/backend.h"

namespace memserve {

class StepGraphEmulator : public Backend {
 public:
  explicit StepGraphEmulator(std::unique_ptr<Backend> inner);
  ~StepGraphEmulator() override;

  const char* name() const override { return inner_->name(); }
  Device device() const override { return inner_->device(); }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }

  absl::StatusOr<std::unique_ptr<Buffer>> AllocateBuffer(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> WrapHostMemory(const void* data, size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> PlaceWeight(const TensorView& w, WeightUse use,
                                                      Tensor* tensor) override;
  absl::Status Upload(const void* src, const Tensor& dst) override;
  absl::Status Download(const Tensor& src, void* dst) override;
  absl::Status Synchronize() override;

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

  bool SupportsStepGraphs() const override { return true; }
  absl::StatusOr<std::unique_ptr<StepGraph>> CaptureStep(
      const std::function<absl::Status()>& ops) override;
  absl::Status ReplayStep(StepGraph& graph) override;

 private:
  // Records `op` while capturing, else runs it.
  absl::Status Issue(std::function<absl::Status()> op);
  absl::Status Refused(const char* what) const;
  // WriteKv of the tokens whose row is inside the cache.
  absl::Status WriteKvInside(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                             const Tensor& k_cache, const Tensor& v_cache);

  std::unique_ptr<Backend> inner_;
  std::vector<std::function<absl::Status()>>* recording_ = nullptr;
  int64_t captures_ = 0;
  int64_t replays_ = 0;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_TESTING_STEP_GRAPH_EMULATOR_H_
