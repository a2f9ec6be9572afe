// Weight packing: a [rows, in] matmul weight copied into the layout of the
// packed AVX2 and AVX-512 kernels (kernels.h, packed_matmul_*) or, for
// --cpu_matmul_precision bf16, of the bf16 kernels (bf16_matmul.h).
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_PACKED_WEIGHT_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_PACKED_WEIGHT_H_

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"
#include "engine/weights.h"

namespace memserve {

// A [rows, in] weight repacked for the packed kernels, in panels of
// kPanelRows rows. Panel p holds rows 32p .. 32p + 31 (rows past the end are
// zero) column by column: for each k, 32 values, rows 32p + j and
// 32p + 16 + j in lane j of two 16-lane vectors. BF16: one 64-byte group of
// 16 uint32 per k, lane j = bf16(row 32p + j) | bf16(row 32p + 16 + j) << 16,
// so one shift and one mask give both vectors in fp32. F32: 32 floats per k.
// I8: 32 int8 per k (rows in order), and `scales`: per block of
// kInt8BlockSize columns, the 32 rows' F32 scales (zero past the end).
// The kernels then multiply a column of 32 weights by one broadcast x[t][k]:
// each output is the fmadd chain over k = 0, 1, ..., in - 1 from 0, whatever
// the token blocking, so a token's result never depends on the batch.
//
// kBf16Pairs (BF16 only; the bf16-activation kernels, bf16_matmul.h): the
// columns padded with zeros to in_padded (a multiple of kPairBlockK), and
// per pair of columns kp (2kp, 2kp + 1) 32 uint32, lane j =
// bf16(row 32p + j, column 2kp) | bf16(row 32p + j, column 2kp + 1) << 16.
struct PackedWeight {
  static constexpr int64_t kPanelRows = 32;
  // Weights with fewer rows stay unpacked (the memory layers' gate: 1 row).
  static constexpr int64_t kMinRows = 16;
  // kBf16Pairs pads the columns to a multiple of this (an AMX tile's depth).
  static constexpr int64_t kPairBlockK = 32;

  enum class Layout { kColumns, kBf16Pairs };

  DType dtype = DType::kF32;
  Layout layout = Layout::kColumns;
  int64_t rows = 0;
  int64_t in = 0;
  int64_t in_padded = 0;  // kBf16Pairs: in rounded up to kPairBlockK; else in
  int64_t panels = 0;
  std::unique_ptr<void, void (*)(void*)> data{nullptr, std::free};    // 64-byte aligned
  std::unique_ptr<void, void (*)(void*)> scales{nullptr, std::free};  // I8 only

  // Bytes of data and scales.
  size_t bytes() const;
};

// Whether PackWeight takes `w`: 2-D, F32 or BF16 with at least kMinRows
// rows, or I8 (any rows) with its scales and a multiple of kInt8BlockSize
// columns.
bool IsPackable(const TensorView& w);

// A packed copy of `w` (as large as `w`, plus kBf16Pairs' padding), packed on
// `pool`'s threads; null when the copy cannot be allocated (the weight then
// stays unpacked). REQUIRES: IsPackable(w); kBf16Pairs only for BF16.
std::unique_ptr<PackedWeight> PackWeight(
    const TensorView& w, ThreadPool* pool,
    PackedWeight::Layout layout = PackedWeight::Layout::kColumns);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_PACKED_WEIGHT_H_
