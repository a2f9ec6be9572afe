// The operand rules of the Backend ops (engine/backend/backend.h), one place
// for every backend: every check that needs only the tensors' descriptions
// (buffer owner, dtype, bounds, shapes), none that needs their contents
// (ids, positions, block tables: a backend that can read them checks them
// too). The CPU and CUDA backends call the shape checks first in every op;
// the CUDA backend also uses CheckOperand / CheckWeight (the CPU backend
// resolves host addresses instead, with the same messages). Tested on any
// machine (op_checks_test.cc). Each returns OK or InvalidArgument naming the
// op, the operand and what was expected.
#ifndef MEMSERVE_ENGINE_BACKEND_OP_CHECKS_H_
#define MEMSERVE_ENGINE_BACKEND_OP_CHECKS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "engine/backend/backend.h"
#include "engine/dtype.h"
#include "engine/runtime/tensor.h"

namespace memserve {

// `t` lies inside a buffer of `backend` and has `dtype`.
absl::Status CheckOperand(const Backend* backend, const Tensor& t, DType dtype, const char* what);
// The same for a weight: F32 or BF16.
absl::Status CheckWeight(const Backend* backend, const Tensor& t, const char* what);

// Shapes (and the dtypes the shapes imply) of each op; operands are checked
// with CheckOperand / CheckWeight by the caller.
absl::Status CheckMatMulShapes(const Tensor& x, const Tensor& w, const Tensor& bias,
                               const Tensor& y);
absl::Status CheckRmsNormShapes(const Tensor& x, const Tensor& weight, const Tensor& y);
absl::Status CheckEmbeddingShapes(const Tensor& table, const Tensor& ids, const Tensor& y);
absl::Status CheckRopeShapes(const Tensor& x, const Tensor& positions, const Tensor& rope);
// Also: both caches of one dtype, F32 or BF16.
absl::Status CheckWriteKvShapes(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                                const Tensor& k_cache, const Tensor& v_cache);
// Also the descriptor's scalars against its tensors, and the caches' dtype.
absl::Status CheckAttentionShapes(const AttentionShape& shape, const BatchDescriptor& batch,
                                  const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                  const Tensor& out);
absl::Status CheckSameSize(const char* op, const Tensor& a, const Tensor& b, const char* b_name);
absl::Status CheckSigmoidGateRowsShapes(const Tensor& gate, const Tensor& x);
absl::Status CheckMemorySelectShapes(const MemorySelectArgs& a);
absl::Status CheckValueGatherShapes(const Tensor& values, const Tensor& rows, const Tensor& weights,
                                    int64_t col_begin, int64_t col_end, const Tensor& out);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_OP_CHECKS_H_
