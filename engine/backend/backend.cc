#include "engine/backend/backend.h"

#include <utility>

#include "engine/status_macros.h"

namespace memserve {

absl::StatusOr<std::unique_ptr<Buffer>> Backend::PlaceWeight(const TensorView& w, WeightUse use,
                                                             Tensor* tensor) {
  (void)use;
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buffer, WrapHostMemory(w.data, w.nbytes()));
  *tensor = TensorFromView(buffer.get(), w);
  return buffer;
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
