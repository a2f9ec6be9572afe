#include "engine/backend/cpu/packed_weight.h"

#include <algorithm>
#include <cstring>

namespace memserve {
namespace {

// Copies panel p of a [rows, in] weight into the layout of
// PackedWeight (`out` = the start of the packed weight).
void PackPanelBf16(const uint16_t* w, int64_t rows, int64_t in, int64_t p, uint32_t* out) {
  uint32_t* panel = out + p * in * 16;
  std::memset(panel, 0, static_cast<size_t>(in * 16) * sizeof(uint32_t));
  for (int64_t r = p * 32; r < std::min(rows, p * 32 + 32); ++r) {
    const int64_t j = r - p * 32;
    uint32_t* col = panel + j % 16;
    const int shift = j < 16 ? 0 : 16;
    for (int64_t k = 0; k < in; ++k) col[k * 16] |= static_cast<uint32_t>(w[r * in + k]) << shift;
  }
}

// Panel p in the kBf16Pairs layout (`in_padded` columns).
void PackPanelBf16Pairs(const uint16_t* w, int64_t rows, int64_t in, int64_t in_padded, int64_t p,
                        uint32_t* out) {
  uint32_t* panel = out + p * in_padded * 16;
  std::memset(panel, 0, static_cast<size_t>(in_padded * 16) * sizeof(uint32_t));
  for (int64_t r = p * 32; r < std::min(rows, p * 32 + 32); ++r) {
    uint32_t* lane = panel + (r - p * 32);
    for (int64_t k = 0; k < in; ++k) {
      lane[(k / 2) * 32] |= static_cast<uint32_t>(w[r * in + k]) << (k % 2 == 0 ? 0 : 16);
    }
  }
}

void PackPanelF32(const float* w, int64_t rows, int64_t in, int64_t p, float* out) {
  float* panel = out + p * in * 32;
  std::memset(panel, 0, static_cast<size_t>(in * 32) * sizeof(float));
  for (int64_t r = p * 32; r < std::min(rows, p * 32 + 32); ++r) {
    float* col = panel + (r - p * 32);
    for (int64_t k = 0; k < in; ++k) col[k * 32] = w[r * in + k];
  }
}

void PackPanelI8(const int8_t* w, const float* scales, int64_t rows, int64_t in, int64_t p,
                 int8_t* out, float* out_scales) {
  int8_t* panel = out + p * in * 32;
  const int64_t blocks = in / kInt8BlockSize;
  float* panel_scales = out_scales + p * blocks * 32;
  std::memset(panel, 0, static_cast<size_t>(in * 32));
  std::memset(panel_scales, 0, static_cast<size_t>(blocks * 32) * sizeof(float));
  for (int64_t r = p * 32; r < std::min(rows, p * 32 + 32); ++r) {
    const int64_t j = r - p * 32;
    for (int64_t k = 0; k < in; ++k) panel[k * 32 + j] = w[r * in + k];
    for (int64_t b = 0; b < blocks; ++b) panel_scales[b * 32 + j] = scales[r * blocks + b];
  }
}

}  // namespace

size_t PackedWeight::bytes() const {
  const size_t elems = static_cast<size_t>(panels * kPanelRows * in_padded);
  if (dtype != DType::kI8) return elems * DTypeSize(dtype);
  return elems + static_cast<size_t>(panels * kPanelRows * (in / kInt8BlockSize)) * sizeof(float);
}

bool IsPackable(const TensorView& w) {
  if (w.data == nullptr || w.shape.size() != 2 || w.shape[0] < 1 || w.shape[1] < 1) return false;
  if (w.dtype == DType::kI8) return w.scales != nullptr && w.shape[1] % kInt8BlockSize == 0;
  return w.shape[0] >= PackedWeight::kMinRows &&
         (w.dtype == DType::kBF16 || w.dtype == DType::kF32);
}

std::unique_ptr<PackedWeight> PackWeight(const TensorView& w, ThreadPool* pool,
                                         PackedWeight::Layout layout) {
  const bool pairs = layout == PackedWeight::Layout::kBf16Pairs;
  auto pw = std::make_unique<PackedWeight>();
  pw->dtype = w.dtype;
  pw->layout = layout;
  pw->rows = w.shape[0];
  pw->in = w.shape[1];
  pw->in_padded = pairs ? (pw->in + PackedWeight::kPairBlockK - 1) / PackedWeight::kPairBlockK *
                              PackedWeight::kPairBlockK
                        : pw->in;
  pw->panels = (pw->rows + PackedWeight::kPanelRows - 1) / PackedWeight::kPanelRows;
  const size_t bytes = static_cast<size_t>(pw->panels * PackedWeight::kPanelRows * pw->in_padded) *
                       DTypeSize(w.dtype);
  pw->data.reset(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  if (pw->data == nullptr) return nullptr;
  if (w.dtype == DType::kI8) {
    const size_t scale_bytes = pw->bytes() - bytes;
    pw->scales.reset(std::aligned_alloc(64, (scale_bytes + 63) / 64 * 64));
    if (pw->scales == nullptr) return nullptr;
  }
  const PackedWeight& pwr = *pw;
  pool->ParallelFor(pw->panels, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      if (w.dtype == DType::kI8) {
        PackPanelI8(static_cast<const int8_t*>(w.data), w.scales, pwr.rows, pwr.in, p,
                    static_cast<int8_t*>(pwr.data.get()), static_cast<float*>(pwr.scales.get()));
      } else if (pairs) {
        PackPanelBf16Pairs(static_cast<const uint16_t*>(w.data), pwr.rows, pwr.in, pwr.in_padded, p,
                           static_cast<uint32_t*>(pwr.data.get()));
      } else if (w.dtype == DType::kBF16) {
        PackPanelBf16(static_cast<const uint16_t*>(w.data), pwr.rows, pwr.in, p,
                      static_cast<uint32_t*>(pwr.data.get()));
      } else {
        PackPanelF32(static_cast<const float*>(w.data), pwr.rows, pwr.in, p,
                     static_cast<float*>(pwr.data.get()));
      }
    }
  });
  return pw;
}

}  // namespace memserve
