#include "engine/backend/cpu/matmul.h"

#include <algorithm>
#include <vector>

namespace memserve {
namespace {

// y[t * ldy + r] += bias[r] for r in [r_begin, r_end), t in [t_begin, t_end);
// nothing when bias is null.
void AddBias(const void* bias, DType bias_dtype, int64_t r_begin, int64_t r_end, int64_t t_begin,
             int64_t t_end, float* y, int64_t ldy) {
  if (bias == nullptr) return;
  for (int64_t t = t_begin; t < t_end; ++t) {
    float* yt = y + t * ldy;
    if (bias_dtype == DType::kF32) {
      const float* b = static_cast<const float*>(bias);
      for (int64_t r = r_begin; r < r_end; ++r) yt[r] += b[r];
    } else {
      const uint16_t* b = static_cast<const uint16_t*>(bias);
      for (int64_t r = r_begin; r < r_end; ++r) yt[r] += Bf16ToF32(b[r]);
    }
  }
}

// How a matmul is split over the thread pool: tasks are (range of row units,
// tile of tokens), where a unit is a weight row (unpacked) or a 32-row panel
// (packed). Tokens go in tiles so that a tile of x stays in L2 while the
// weights of a task stream through L1; at decode sizes (a few tokens) every
// weight is read from memory once and used for all tokens. Tasks: about 4
// per thread, each with enough multiply-adds to amortize scheduling.
class MatMulTasks {
 public:
  static constexpr int64_t kTokenTile = 64;

  // `units` row units of `macs_per_unit_token` multiply-adds per token each;
  // unit ranges are multiples of `unit_align` (except the last); tiles of
  // `token_tile` tokens (a multiple of 16).
  MatMulTasks(int64_t units, int64_t macs_per_unit_token, int64_t unit_align, int64_t n_tokens,
              int threads, int64_t token_tile = kTokenTile)
      : units_(units),
        n_tokens_(n_tokens),
        token_tile_(token_tile),
        token_tiles_((n_tokens + token_tile - 1) / token_tile) {
    constexpr int64_t kMinTaskMacs = 1 << 15;
    const int64_t tile_tokens = std::min(n_tokens, token_tile_);
    const int64_t chunks_wanted =
        std::max<int64_t>(1, (static_cast<int64_t>(threads) * 4 + token_tiles_ - 1) / token_tiles_);
    int64_t chunk = (units + chunks_wanted - 1) / chunks_wanted;
    chunk = std::max(chunk, kMinTaskMacs / std::max<int64_t>(1, macs_per_unit_token * tile_tokens));
    unit_chunk_ = std::max(unit_align, (chunk + unit_align - 1) / unit_align * unit_align);
    unit_chunks_ = (units + unit_chunk_ - 1) / unit_chunk_;
  }

  int64_t count() const { return unit_chunks_ * token_tiles_; }
  // Task `task`'s units [*u_begin, *u_end) and tokens [*t_begin, *t_end).
  void Get(int64_t task, int64_t* u_begin, int64_t* u_end, int64_t* t_begin, int64_t* t_end) const {
    *u_begin = (task % unit_chunks_) * unit_chunk_;
    *u_end = std::min(units_, *u_begin + unit_chunk_);
    *t_begin = (task / unit_chunks_) * token_tile_;
    *t_end = std::min(n_tokens_, *t_begin + token_tile_);
  }

 private:
  int64_t units_, n_tokens_, token_tile_, token_tiles_;
  int64_t unit_chunk_ = 1, unit_chunks_ = 1;
};

}  // namespace

void PackedMatMul(ThreadPool* pool, const CpuKernels& kern, const CpuBf16Kernels* bf16,
                  const PackedWeight& w, const void* bias_data, DType bias_dtype, const float* x,
                  int64_t n_tokens, float* y) {
  if (n_tokens <= 0) return;
  const bool pairs = w.layout == PackedWeight::Layout::kBf16Pairs;
  // kBf16Pairs: x rounded to bf16 once, in_padded columns (zero past w.in)
  // and rows up to a multiple of 16 (zero): the AMX tiles read 16 x 32.
  thread_local std::vector<uint16_t> xb_storage;
  uint16_t* xb = nullptr;
  if (pairs) {
    const int64_t rows16 = (n_tokens + 15) / 16 * 16;
    xb_storage.resize(static_cast<size_t>(rows16 * w.in_padded));
    xb = xb_storage.data();
    auto round_rows = [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        uint16_t* row = xb + t * w.in_padded;
        bf16->round_to_bf16(x + t * w.in, w.in, row);
        std::fill(row + w.in, row + w.in_padded, uint16_t{0});
      }
    };
    // (A few tokens: not worth a hand-off to the pool.)
    if (n_tokens * w.in >= (1 << 16)) {
      pool->ParallelFor(n_tokens, round_rows);
    } else {
      round_rows(0, n_tokens);
    }
    std::fill(xb + n_tokens * w.in_padded, xb + rows16 * w.in_padded, uint16_t{0});
  }
  // Within a task every panel is read from memory once and used for all
  // tokens of the tile (up to 12 tokens per pass, further passes hit the cache).
  // Panel ranges are multiples of 4: the one-token kernels take four panels
  // at once (AVX2; AVX-512 too).
  // kBf16Pairs: tiles of up to 256 tokens. Its x is bf16 (a 256-token tile
  // of a 2816-column x is 1.4 MB, still in L2), and AMX multiplies so fast
  // that re-reading the weights for every 64 tokens made a prefill
  // memory-bound.
  constexpr int64_t kPairsTokenTile = 256;
  const MatMulTasks tasks(w.panels, w.in * PackedWeight::kPanelRows, /*unit_align=*/4, n_tokens,
                          pool->num_threads(), pairs ? kPairsTokenTile : MatMulTasks::kTokenTile);
  pool->ParallelFor(tasks.count(), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      int64_t p_begin, p_end, t_begin, t_end;
      tasks.Get(task, &p_begin, &p_end, &t_begin, &t_end);
      const float* xt = x + t_begin * w.in;
      float* yt = y + t_begin * w.rows;
      if (pairs) {
        bf16->matmul(static_cast<const uint32_t*>(w.data.get()), w.in_padded, w.rows, p_begin,
                     p_end, xb + t_begin * w.in_padded, w.in_padded, t_end - t_begin, yt, w.rows);
      } else if (w.dtype == DType::kI8) {
        kern.packed_matmul_i8(static_cast<const int8_t*>(w.data.get()),
                              static_cast<const float*>(w.scales.get()), w.in, w.rows, p_begin,
                              p_end, xt, w.in, t_end - t_begin, yt, w.rows);
      } else if (w.dtype == DType::kBF16) {
        kern.packed_matmul_bf16(static_cast<const uint32_t*>(w.data.get()), w.in, w.rows, p_begin,
                                p_end, xt, w.in, t_end - t_begin, yt, w.rows);
      } else {
        kern.packed_matmul_f32(static_cast<const float*>(w.data.get()), w.in, w.rows, p_begin,
                               p_end, xt, w.in, t_end - t_begin, yt, w.rows);
      }
      AddBias(bias_data, bias_dtype, p_begin * PackedWeight::kPanelRows,
              std::min(w.rows, p_end * PackedWeight::kPanelRows), t_begin, t_end, y, w.rows);
    }
  });
}

void GroupedMatMul(ThreadPool* pool, const CpuKernels& kern, const void* w, DType w_dtype,
                   int64_t rows, int64_t in, int64_t rows_per_group, int64_t x_group_stride,
                   const void* bias, DType bias_dtype, const float* x, int64_t ldx,
                   int64_t n_tokens, float* y, int64_t ldy) {
  if (rows <= 0 || n_tokens <= 0) return;
  // Row ranges in multiples of 4 (the kernels' row block).
  const MatMulTasks tasks(rows, in, /*unit_align=*/4, n_tokens, pool->num_threads());
  auto run_task = [&](int64_t task) {
    int64_t r_begin, r_end, t_begin, t_end;
    tasks.Get(task, &r_begin, &r_end, &t_begin, &t_end);
    for (int64_t r = r_begin; r < r_end;) {
      const int64_t g = r / rows_per_group;
      const int64_t seg_end = std::min(r_end, (g + 1) * rows_per_group);
      const float* xs = x + t_begin * ldx + g * x_group_stride;
      float* ys = y + t_begin * ldy + r;
      if (w_dtype == DType::kF32) {
        kern.matmul_f32(static_cast<const float*>(w) + r * in, in, in, seg_end - r, xs, ldx,
                        t_end - t_begin, ys, ldy);
      } else {
        kern.matmul_bf16(static_cast<const uint16_t*>(w) + r * in, in, in, seg_end - r, xs, ldx,
                         t_end - t_begin, ys, ldy);
      }
      r = seg_end;
    }
    AddBias(bias, bias_dtype, r_begin, r_end, t_begin, t_end, y, ldy);
  };
  pool->ParallelFor(tasks.count(), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) run_task(task);
  });
}

}  // namespace memserve
