#include "engine/backend/testing/step_graph_emulator.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

class EmulatedGraph : public Backend::StepGraph {
 public:
  explicit EmulatedGraph(const Backend* owner) : owner(owner) {}
  const Backend* owner;
  std::vector<std::function<absl::Status()>> ops;
};

}  // namespace

StepGraphEmulator::StepGraphEmulator(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
StepGraphEmulator::~StepGraphEmulator() = default;

absl::Status StepGraphEmulator::Refused(const char* what) const {
  return absl::FailedPreconditionError(
      absl::StrCat("step graph emulator: ", what, " during a step capture"));
}

absl::Status StepGraphEmulator::Issue(std::function<absl::Status()> op) {
  if (recording_ != nullptr) {
    recording_->push_back(std::move(op));
    return absl::OkStatus();
  }
  return op();
}

absl::StatusOr<std::unique_ptr<Buffer>> StepGraphEmulator::AllocateBuffer(size_t bytes) {
  if (recording_ != nullptr) return Refused("AllocateBuffer");
  return inner_->AllocateBuffer(bytes);
}

absl::StatusOr<std::unique_ptr<Buffer>> StepGraphEmulator::WrapHostMemory(const void* data,
                                                                          size_t bytes) {
  if (recording_ != nullptr) return Refused("WrapHostMemory");
  return inner_->WrapHostMemory(data, bytes);
}

absl::StatusOr<std::unique_ptr<Buffer>> StepGraphEmulator::PlaceWeight(const TensorView& w,
                                                                       WeightUse use,
                                                                       Tensor* tensor) {
  if (recording_ != nullptr) return Refused("PlaceWeight");
  return inner_->PlaceWeight(w, use, tensor);
}

absl::Status StepGraphEmulator::Upload(const void* src, const Tensor& dst) {
  if (recording_ != nullptr) return Refused("Upload");
  return inner_->Upload(src, dst);
}

absl::Status StepGraphEmulator::Download(const Tensor& src, void* dst) {
  if (recording_ != nullptr) return Refused("Download");
  return inner_->Download(src, dst);
}

absl::Status StepGraphEmulator::Synchronize() {
  if (recording_ != nullptr) return Refused("Synchronize");
  return inner_->Synchronize();
}

absl::Status StepGraphEmulator::MatMul(const Tensor& x, const Tensor& w, const Tensor& bias,
                                       const Tensor& y) {
  return Issue([=] { return inner_->MatMul(x, w, bias, y); });
}

absl::Status StepGraphEmulator::RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                                        const Tensor& y) {
  return Issue([=] { return inner_->RmsNorm(x, weight, eps, y); });
}

absl::Status StepGraphEmulator::Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) {
  return Issue([=] { return inner_->Embedding(table, ids, y); });
}

absl::Status StepGraphEmulator::Rope(const Tensor& x, const Tensor& positions, const Tensor& rope) {
  return Issue([=] { return inner_->Rope(x, positions, rope); });
}

absl::Status StepGraphEmulator::WriteKv(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                                        const Tensor& k_cache, const Tensor& v_cache) {
  return Issue([=] { return WriteKvInside(k, v, kv_rows, k_cache, v_cache); });
}

absl::Status StepGraphEmulator::WriteKvInside(const Tensor& k, const Tensor& v,
                                              const Tensor& kv_rows, const Tensor& k_cache,
                                              const Tensor& v_cache) {
  if (kv_rows.dtype != DType::kI64 || k.rank != 2 || k_cache.rank != 2) {
    return inner_->WriteKv(k, v, kv_rows, k_cache, v_cache);  // its error
  }
  std::vector<int64_t> rows(static_cast<size_t>(kv_rows.numel()));
  RETURN_IF_ERROR(inner_->Download(kv_rows, rows.data()));
  std::vector<int64_t> inside;
  for (size_t t = 0; t < rows.size(); ++t) {
    if (rows[t] >= 0 && rows[t] < k_cache.shape[0]) inside.push_back(static_cast<int64_t>(t));
  }
  if (inside.size() == rows.size()) return inner_->WriteKv(k, v, kv_rows, k_cache, v_cache);
  for (int64_t t : inside) {
    RETURN_IF_ERROR(
        inner_->WriteKv(k.Rows(t, 1), v.Rows(t, 1), kv_rows.Rows(t, 1), k_cache, v_cache));
  }
  return absl::OkStatus();
}

absl::Status StepGraphEmulator::Attention(const AttentionShape& shape, const BatchDescriptor& batch,
                                          const Tensor& q, const Tensor& k_cache,
                                          const Tensor& v_cache, const Tensor& out) {
  return Issue([=] { return inner_->Attention(shape, batch, q, k_cache, v_cache, out); });
}

absl::Status StepGraphEmulator::SwiGlu(const Tensor& a, const Tensor& b, const Tensor& y) {
  return Issue([=] { return inner_->SwiGlu(a, b, y); });
}

absl::Status StepGraphEmulator::Add(const Tensor& x, const Tensor& y) {
  return Issue([=] { return inner_->Add(x, y); });
}

absl::Status StepGraphEmulator::SigmoidGateRows(const Tensor& gate, const Tensor& x) {
  return Issue([=] { return inner_->SigmoidGateRows(gate, x); });
}

absl::Status StepGraphEmulator::MemorySelect(const MemorySelectArgs& args) {
  return Issue([=] { return inner_->MemorySelect(args); });
}

absl::Status StepGraphEmulator::ValueGather(const Tensor& values, const Tensor& rows,
                                            const Tensor& weights, int64_t col_begin,
                                            int64_t col_end, const Tensor& out) {
  return Issue([=] { return inner_->ValueGather(values, rows, weights, col_begin, col_end, out); });
}

absl::StatusOr<std::unique_ptr<Backend::StepGraph>> StepGraphEmulator::CaptureStep(
    const std::function<absl::Status()>& ops) {
  if (recording_ != nullptr) return Refused("CaptureStep");
  auto graph = std::make_unique<EmulatedGraph>(this);
  recording_ = &graph->ops;
  const absl::Status recorded = ops();
  recording_ = nullptr;
  if (!recorded.ok()) return recorded;
  ++captures_;
  return std::unique_ptr<StepGraph>(std::move(graph));
}

absl::Status StepGraphEmulator::ReplayStep(StepGraph& graph) {
  auto* g = dynamic_cast<EmulatedGraph*>(&graph);
  if (g == nullptr || g->owner != this) {
    return absl::InvalidArgumentError("step graph emulator: a graph of another backend");
  }
  if (recording_ != nullptr) return Refused("ReplayStep");
  ++replays_;
  for (const auto& op : g->ops) RETURN_IF_ERROR(op());
  return absl::OkStatus();
}

}  // namespace memserve
