// Whole-model parity of a backend with a reference backend (the CPU): the
// same checkpoint loaded on both, the same batched steps run on both, every
// logits row compared. This is the test a new backend (CUDA) must pass on
// top of the op tests (backend_ops_test); the CPU's own parity with the
// PyTorch reference is tests/parity.
#ifndef MEMSERVE_ENGINE_BACKEND_TESTING_MODEL_PARITY_H_
#define MEMSERVE_ENGINE_BACKEND_TESTING_MODEL_PARITY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/dtype.h"
#include "engine/runtime/placement_plan.h"

namespace memserve {

struct ModelParityOptions {
  std::vector<int> prompt;          // sequence b's prompt: these ids rotated left by b
  int batch = 3;                    // sequences run together (ForwardBatch)
  int decode_steps = 8;             // batched decode steps after the prefill step
  int reference_memory_shards = 1;  // ModelOptions::memory_shards of each load
  int candidate_memory_shards = 1;
  // The candidate's K/V cache dtype and step graphs (ModelOptions); the
  // reference always runs F32 and eagerly.
  DType candidate_kv_cache_dtype = DType::kF32;
  bool candidate_step_graphs = true;
  // The candidate's ModelOptions::plan_memory (where its value tables go);
  // unset = the backend's default placement.
  std::function<absl::StatusOr<PlacementPlan>(const PlacementRequest&)> candidate_plan_memory;
  // A row's argmax is "clear" when the reference's best logit beats its
  // second best by more than this (logit units).
  float clear_margin = 0.0f;
};

struct ModelParityReport {
  int64_t rows = 0;               // logits rows compared
  double max_nmse = 0.0;          // worst row: sum (c - r)^2 / sum r^2
  double max_abs_error = 0.0;     // worst |c - r| over all logits
  int64_t argmax_mismatches = 0;  // rows whose argmax differs
  // Rows whose argmax differs although the reference's is clear
  // (clear_margin): greedy decoding would diverge where it should not.
  int64_t clear_argmax_mismatches = 0;
  bool bit_identical = true;  // every row equal bit for bit
};

// Loads `dir` on `reference` and on `candidate` and runs on each one
// prefill step (every sequence's prompt, all logits) and then decode_steps
// steps of one token per sequence, feeding both the reference's greedy
// tokens. Errors: loading or a forward step failing on either backend
// (the message names which), an empty prompt, batch < 1.
absl::StatusOr<ModelParityReport> CompareModelOnBackends(const std::string& dir, Backend& reference,
                                                         Backend& candidate,
                                                         const ModelParityOptions& options);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_TESTING_MODEL_PARITY_H_
