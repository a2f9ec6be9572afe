#include "engine/backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/attention.h"
#include "engine/backend/cpu/matmul.h"
#include "engine/backend/op_checks.h"
#include "engine/dtype.h"
#include "engine/status_macros.h"

// `var` = the host address of weight operand `tensor`, or return the error
// naming `what`.
#define MEMSERVE_WEIGHT_DATA(var, tensor, what) \
  var = WeightData(tensor);                     \
  if (var == nullptr) return WeightError(tensor, what)
// `void* var` = the host address of `tensor` (of `dtype`), or return the
// error naming `what`.
#define MEMSERVE_HOST_DATA(var, tensor, dtype, what) \
  void* var = HostData(tensor, dtype);               \
  if (var == nullptr) return OperandError(tensor, dtype, what)

namespace memserve {
namespace {

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

constexpr const char* kOwnedType = "cpu";
constexpr const char* kMappedType = "cpu-mapped";
constexpr const char* kPackedType = "cpu-packed";

// Every buffer of a CpuBackend: host memory at data().
class HostBuffer : public Buffer {
 public:
  // Takes ownership of `allocation` (freed with std::free) when `owned`;
  // the buffer's bytes start at `data`, inside it.
  HostBuffer(const Backend* backend, const char* type, void* data, size_t size, bool owned,
             void* allocation = nullptr)
      : Buffer(backend, Device::kCpu, type, size),
        data_(data),
        allocation_(allocation != nullptr ? allocation : data),
        owned_(owned) {}
  ~HostBuffer() override {
    if (owned_) std::free(allocation_);
  }
  void* data() const { return data_; }

 private:
  void* data_;
  void* allocation_;
  bool owned_;
};

// A weight in the packed kernels' layout; data() is the packed panels.
class PackedBuffer : public HostBuffer {
 public:
  PackedBuffer(const Backend* backend, std::unique_ptr<PackedWeight> packed, size_t size)
      : HostBuffer(backend, kPackedType, packed->data.get(), size, /*owned=*/false),
        packed_(std::move(packed)) {}
  const PackedWeight& packed() const { return *packed_; }

 private:
  std::unique_ptr<PackedWeight> packed_;
};

const PackedWeight* PackedOf(const Tensor& w) {
  if (w.buffer == nullptr || w.buffer->type_name() != kPackedType) return nullptr;
  return &static_cast<const PackedBuffer*>(w.buffer)->packed();
}

}  // namespace

CpuBackend::CpuBackend(const Options& options) {
  CpuIsa isa = options.isa;
  if (isa == CpuIsa::kAuto || !CpuIsaSupported(isa)) isa = SupportedCpuIsas().back();
  isa_ = isa;
  kernels_ = &KernelsFor(isa);
  pack_weights_ = options.pack_weights;
  // The bf16 kernels need AVX-512 (and AVX512-BF16); Options::isa below
  // AVX-512, or unpacked weights, keep the exact path.
  if (options.bf16_matmul && pack_weights_ && isa_ == CpuIsa::kAvx512) {
    bf16_kernels_ = Bf16Kernels();
  }
  pool_ = std::make_unique<ThreadPool>(options.num_threads);
}

CpuBackend::~CpuBackend() = default;

// --- memory ---

const void* CpuBackend::HostAddress(const Buffer& buffer) {
  return static_cast<const HostBuffer&>(buffer).data();
}

absl::StatusOr<std::unique_ptr<Buffer>> CpuBackend::AllocateBuffer(size_t bytes) {
  // 64-byte aligned (a cache line; every vector load of the kernels).
  //
  // Cache colouring: large allocations are fresh mmaps, so without an offset
  // every activation buffer would start at the same address modulo 4 KiB, and
  // an op reading row t of x while writing row t of y (MatMul, attention)
  // would hit the same L1 sets and the CPU's 4 KiB store/load aliasing check
  // on every access. Consecutive buffers start at different multiples of
  // 64 bytes within a page instead (docs/perf/device-neutral-engine.md:
  // the demo server ran 10% slower without this).
  constexpr size_t kColours = 61;  // prime: buffers allocated in a cycle still differ
  const size_t colour = (next_colour_.fetch_add(1, std::memory_order_relaxed) % kColours) * 64;
  const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64) + colour;
  void* allocation = std::aligned_alloc(64, rounded);
  if (allocation == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cpu backend: cannot allocate a buffer of ", bytes, " bytes"));
  }
  void* data = static_cast<char*>(allocation) + colour;
  return std::unique_ptr<Buffer>(
      new HostBuffer(this, kOwnedType, data, bytes, /*owned=*/true, allocation));
}

absl::StatusOr<std::unique_ptr<Buffer>> CpuBackend::WrapHostMemory(const void* data, size_t bytes) {
  if (data == nullptr && bytes > 0) {
    return absl::InvalidArgumentError("cpu backend: WrapHostMemory of a null range");
  }
  // Read-only by contract: no op writes a wrapped buffer (the model passes
  // them only as weights).
  return std::unique_ptr<Buffer>(
      new HostBuffer(this, kMappedType, const_cast<void*>(data), bytes, /*owned=*/false));
}

absl::StatusOr<std::unique_ptr<Buffer>> CpuBackend::PlaceWeight(const TensorView& w, WeightUse use,
                                                                Tensor* tensor) {
  const bool int8 = w.dtype == DType::kI8;
  if (int8 && (use != WeightUse::kMatMul || !IsPackable(w))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cpu backend: weight ", w.name, " is I8; int8 weights are matmul weights with scales and ",
        kInt8BlockSize, "-column blocks"));
  }
  const bool packable =
      pack_weights_ && use == WeightUse::kMatMul && IsPackable(w) &&
      (int8 ? kernels_->packed_matmul_i8 != nullptr
            : kernels_->packed_matmul_bf16 != nullptr && kernels_->packed_matmul_f32 != nullptr);
  if (packable) {
    const PackedWeight::Layout layout = bf16_kernels_ != nullptr && w.dtype == DType::kBF16
                                            ? PackedWeight::Layout::kBf16Pairs
                                            : PackedWeight::Layout::kColumns;
    std::unique_ptr<PackedWeight> packed = PackWeight(w, pool_.get(), layout);
    if (packed != nullptr) {  // else out of memory: the weight stays in the mapping
      const size_t bytes = packed->bytes();
      std::unique_ptr<Buffer> buffer(new PackedBuffer(this, std::move(packed), bytes));
      *tensor = TensorFromView(buffer.get(), w);
      ++packed_weights_;
      return buffer;
    }
  }
  if (int8) return DequantizeInt8(w, tensor);
  return Backend::PlaceWeight(w, use, tensor);
}

absl::StatusOr<std::unique_ptr<Buffer>> CpuBackend::DequantizeInt8(const TensorView& w,
                                                                   Tensor* tensor) {
  const int64_t rows = w.shape[0], in = w.shape[1], blocks = in / kInt8BlockSize;
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buffer,
                   AllocateBuffer(static_cast<size_t>(rows * in) * sizeof(float)));
  float* out = static_cast<float*>(static_cast<HostBuffer*>(buffer.get())->data());
  const int8_t* q = static_cast<const int8_t*>(w.data);
  pool_->ParallelFor(rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t k = 0; k < in; ++k) {
        out[r * in + k] =
            static_cast<float>(q[r * in + k]) * w.scales[r * blocks + k / kInt8BlockSize];
      }
    }
  });
  *tensor = Tensor::Of(buffer.get(), DType::kF32, {rows, in});
  return buffer;
}

void* CpuBackend::HostData(const Tensor& t, DType dtype) const {
  if (t.buffer == nullptr || t.buffer->backend() != this || t.dtype != dtype || !t.InBounds()) {
    return nullptr;
  }
  return static_cast<char*>(static_cast<const HostBuffer*>(t.buffer)->data()) + t.offset;
}

absl::Status CpuBackend::OperandError(const Tensor& t, DType dtype, const char* what) const {
  if (t.buffer == nullptr || t.buffer->backend() != this) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu backend: ", what, " is not a tensor of this backend"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("cpu backend: ", what, " is ", t.DebugString(), " at offset ", t.offset,
                   " of a ", t.buffer->size(), "-byte buffer; expected ", DTypeName(dtype)));
}

const void* CpuBackend::WeightData(const Tensor& t) const {
  if ((t.dtype != DType::kF32 && t.dtype != DType::kBF16) || PackedOf(t) != nullptr) {
    return nullptr;
  }
  return HostData(t, t.dtype);
}

absl::Status CpuBackend::WeightError(const Tensor& t, const char* what) const {
  if (PackedOf(t) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cpu backend: ", what, " is a packed weight; only MatMul takes packed weights"));
  }
  if (t.dtype != DType::kF32 && t.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu backend: ", what, " is ", t.DebugString(), "; expected F32 or BF16"));
  }
  return OperandError(t, t.dtype, what);
}

absl::Status CpuBackend::Upload(const void* src, const Tensor& dst) {
  if (dst.buffer != nullptr && dst.buffer->type_name() != kOwnedType) {
    return absl::InvalidArgumentError("cpu backend: Upload into a read-only buffer");
  }
  MEMSERVE_HOST_DATA(p, dst, dst.dtype, "Upload destination");
  std::memcpy(p, src, dst.nbytes());
  return absl::OkStatus();
}

absl::Status CpuBackend::Download(const Tensor& src, void* dst) {
  if (PackedOf(src) != nullptr) {
    return absl::InvalidArgumentError("cpu backend: Download of a packed weight");
  }
  MEMSERVE_HOST_DATA(p, src, src.dtype, "Download source");
  std::memcpy(dst, p, src.nbytes());
  return absl::OkStatus();
}

// --- ops ---

absl::Status CpuBackend::MatMul(const Tensor& x, const Tensor& w, const Tensor& bias,
                                const Tensor& y) {
  RETURN_IF_ERROR(CheckMatMulShapes(x, w, bias, y));
  const int64_t out = w.shape[0];
  const int64_t in = w.shape[1];
  const int64_t n_tokens = x.shape[0];
  MEMSERVE_HOST_DATA(xp, x, DType::kF32, "MatMul x");
  MEMSERVE_HOST_DATA(yp, y, DType::kF32, "MatMul y");
  const void* bias_data = nullptr;
  DType bias_dtype = DType::kF32;
  if (bias.present()) {
    MEMSERVE_WEIGHT_DATA(bias_data, bias, "MatMul bias");
    bias_dtype = bias.dtype;
  }
  const float* xf = static_cast<const float*>(xp);
  float* yf = static_cast<float*>(yp);
  if (const PackedWeight* packed = PackedOf(w); packed != nullptr && w.buffer->backend() == this) {
    PackedMatMul(pool_.get(), *kernels_, bf16_kernels_, *packed, bias_data, bias_dtype, xf,
                 n_tokens, yf);
    return absl::OkStatus();
  }
  const void* wp;
  MEMSERVE_WEIGHT_DATA(wp, w, "MatMul w");
  GroupedMatMul(pool_.get(), *kernels_, wp, w.dtype, out, in, /*rows_per_group=*/out,
                /*x_group_stride=*/0, bias_data, bias_dtype, xf, in, n_tokens, yf, out);
  return absl::OkStatus();
}

absl::Status CpuBackend::RmsNorm(const Tensor& x_t, const Tensor& weight, float eps,
                                 const Tensor& y_t) {
  RETURN_IF_ERROR(CheckRmsNormShapes(x_t, weight, y_t));
  const int64_t dim = weight.numel();
  const int64_t n_tokens = x_t.shape[0];
  MEMSERVE_HOST_DATA(xp, x_t, DType::kF32, "RmsNorm x");
  MEMSERVE_HOST_DATA(yp, y_t, DType::kF32, "RmsNorm y");
  const void* wp;
  MEMSERVE_WEIGHT_DATA(wp, weight, "RmsNorm weight");
  const float* x = static_cast<const float*>(xp);
  float* y = static_cast<float*>(yp);
  const bool bf16 = weight.dtype == DType::kBF16;
  const float* wf = static_cast<const float*>(wp);
  const uint16_t* wb = static_cast<const uint16_t*>(wp);
  pool_->ParallelFor(
      n_tokens,
      [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const float* xt = x + t * dim;
          float* yt = y + t * dim;
          double sum_sq = 0.0;
          for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xt[i]) * xt[i];
          const float mean = static_cast<float>(sum_sq / static_cast<double>(dim));
          const float inv = 1.0f / std::sqrt(mean + eps);
          for (int64_t i = 0; i < dim; ++i) {
            yt[i] = (xt[i] * inv) * (bf16 ? Bf16ToF32(wb[i]) : wf[i]);
          }
        }
      },
      /*min_chunk=*/std::max<int64_t>(1, 16384 / std::max<int64_t>(1, dim)));
  return absl::OkStatus();
}

absl::Status CpuBackend::Embedding(const Tensor& table, const Tensor& ids_t, const Tensor& y_t) {
  RETURN_IF_ERROR(CheckEmbeddingShapes(table, ids_t, y_t));
  const int64_t vocab = table.shape[0];
  const int64_t dim = table.shape[1];
  const int64_t n = ids_t.numel();
  const void* tp;
  MEMSERVE_WEIGHT_DATA(tp, table, "Embedding table");
  MEMSERVE_HOST_DATA(ip, ids_t, DType::kI32, "Embedding ids");
  MEMSERVE_HOST_DATA(yp, y_t, DType::kF32, "Embedding y");
  const int32_t* ids = static_cast<const int32_t*>(ip);
  float* y = static_cast<float*>(yp);
  const char* base = static_cast<const char*>(tp);
  const size_t row_bytes = static_cast<size_t>(dim) * DTypeSize(table.dtype);
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("Embedding: ids[", t, "] = ", ids[t], " is outside [0, ", vocab, ")"));
    }
    ConvertToF32(table.dtype, base + static_cast<size_t>(ids[t]) * row_bytes,
                 static_cast<size_t>(dim), y + t * dim);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Rope(const Tensor& x_t, const Tensor& positions_t, const Tensor& rope) {
  RETURN_IF_ERROR(CheckRopeShapes(x_t, positions_t, rope));
  const int64_t n_tokens = x_t.shape[0];
  const int n_heads = static_cast<int>(x_t.shape[1]);
  const int head_dim = static_cast<int>(x_t.shape[2]);
  const int half = head_dim / 2;
  const int64_t max_positions = rope.shape[1];
  MEMSERVE_HOST_DATA(xp, x_t, DType::kF32, "Rope x");
  MEMSERVE_HOST_DATA(pp, positions_t, DType::kI32, "Rope positions");
  MEMSERVE_HOST_DATA(rp, rope, DType::kF32, "Rope table");
  float* x = static_cast<float*>(xp);
  const int32_t* positions = static_cast<const int32_t*>(pp);
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (positions[t] < 0 || positions[t] >= max_positions) {
      return absl::InvalidArgumentError(absl::StrCat("Rope: positions[", t, "] = ", positions[t],
                                                     " is outside the table [0, ", max_positions,
                                                     ")"));
    }
  }
  const float* cos_table = static_cast<const float*>(rp);
  const float* sin_table = cos_table + max_positions * half;
  pool_->ParallelFor(
      n_tokens,
      [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const float* c = cos_table + static_cast<size_t>(positions[t]) * half;
          const float* s = sin_table + static_cast<size_t>(positions[t]) * half;
          for (int h = 0; h < n_heads; ++h) {
            float* v = x + (t * n_heads + h) * head_dim;
            for (int i = 0; i < half; ++i) {
              const float x0 = v[2 * i];
              const float x1 = v[2 * i + 1];
              v[2 * i] = c[i] * x0 - s[i] * x1;
              v[2 * i + 1] = s[i] * x0 + c[i] * x1;
            }
          }
        }
      },
      /*min_chunk=*/std::max<int64_t>(1, 8192 / std::max(1, n_heads * head_dim)));
  return absl::OkStatus();
}

absl::Status CpuBackend::WriteKv(const Tensor& k_t, const Tensor& v_t, const Tensor& rows_t,
                                 const Tensor& k_cache_t, const Tensor& v_cache_t) {
  RETURN_IF_ERROR(CheckWriteKvShapes(k_t, v_t, rows_t, k_cache_t, v_cache_t));
  const int64_t n = k_t.shape[0];
  const int64_t kv_dim = k_t.shape[1];
  MEMSERVE_HOST_DATA(kp, k_t, DType::kF32, "WriteKv k");
  MEMSERVE_HOST_DATA(vp, v_t, DType::kF32, "WriteKv v");
  MEMSERVE_HOST_DATA(rp, rows_t, DType::kI64, "WriteKv kv_rows");
  // The caches: F32, or BF16 (--kv_cache_dtype bf16: rounded to nearest
  // even); CheckWriteKvShapes made both the same dtype.
  const DType cache_dtype = k_cache_t.dtype;
  MEMSERVE_HOST_DATA(kcp, k_cache_t, cache_dtype, "WriteKv k_cache");
  MEMSERVE_HOST_DATA(vcp, v_cache_t, cache_dtype, "WriteKv v_cache");
  const float* k = static_cast<const float*>(kp);
  const float* v = static_cast<const float*>(vp);
  const int64_t* rows = static_cast<const int64_t*>(rp);
  const int64_t cache_rows = k_cache_t.shape[0];
  for (int64_t t = 0; t < n; ++t) {
    if (rows[t] < 0 || rows[t] >= cache_rows) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WriteKv: kv_rows[", t, "] = ", rows[t], " is outside the cache [0, ", cache_rows, ")"));
    }
  }
  for (int64_t t = 0; t < n; ++t) {
    const int64_t src = t * kv_dim, dst = rows[t] * kv_dim;
    if (cache_dtype == DType::kF32) {
      std::copy(k + src, k + src + kv_dim, static_cast<float*>(kcp) + dst);
      std::copy(v + src, v + src + kv_dim, static_cast<float*>(vcp) + dst);
    } else {
      uint16_t* kc = static_cast<uint16_t*>(kcp) + dst;
      uint16_t* vc = static_cast<uint16_t*>(vcp) + dst;
      for (int64_t i = 0; i < kv_dim; ++i) {
        kc[i] = F32ToBf16(k[src + i]);
        vc[i] = F32ToBf16(v[src + i]);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Attention(const AttentionShape& shape, const BatchDescriptor& batch,
                                   const Tensor& q_t, const Tensor& k_cache_t,
                                   const Tensor& v_cache_t, const Tensor& out_t) {
  RETURN_IF_ERROR(CheckAttentionShapes(shape, batch, q_t, k_cache_t, v_cache_t, out_t));
  const int64_t q_dim = static_cast<int64_t>(shape.n_heads) * shape.head_dim;
  MEMSERVE_HOST_DATA(qp, q_t, DType::kF32, "Attention q");
  MEMSERVE_HOST_DATA(op, out_t, DType::kF32, "Attention out");
  // F32 or BF16 caches, both the same (CheckAttentionShapes).
  MEMSERVE_HOST_DATA(kp, k_cache_t, k_cache_t.dtype, "Attention k_cache");
  MEMSERVE_HOST_DATA(vp, v_cache_t, k_cache_t.dtype, "Attention v_cache");
  MEMSERVE_HOST_DATA(sp, batch.seq_starts, DType::kI32, "batch seq_starts");
  MEMSERVE_HOST_DATA(pp, batch.positions, DType::kI32, "batch positions");
  MEMSERVE_HOST_DATA(bp, batch.block_tables, DType::kI32, "batch block_tables");
  const int32_t* starts = static_cast<const int32_t*>(sp);
  const int32_t* positions = static_cast<const int32_t*>(pp);
  const int32_t* tables = static_cast<const int32_t*>(bp);
  const int64_t cache_blocks = k_cache_t.shape[0] / batch.block_size;
  attention_seqs_.clear();
  for (int s = 0; s < batch.n_seqs; ++s) {
    const int64_t first = starts[s];
    const int64_t n = static_cast<int64_t>(starts[s + 1]) - first;
    if (first < 0 || n < 1 || starts[s + 1] > batch.n_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("Attention: sequence ", s, " has rows [", first, ", ", starts[s + 1], ")"));
    }
    CpuAttentionSeq a;
    a.n_tokens = n;
    a.start_pos = positions[first];
    a.n_heads = shape.n_heads;
    a.n_kv_heads = shape.n_kv_heads;
    a.head_dim = shape.head_dim;
    a.sliding_window = shape.sliding_window;
    a.q = static_cast<const float*>(qp) + first * q_dim;
    a.out = static_cast<float*>(op) + first * q_dim;
    a.kv_dtype = k_cache_t.dtype;
    a.k_cache = kp;
    a.v_cache = vp;
    a.block_table = tables + static_cast<int64_t>(s) * batch.max_blocks;
    a.block_size = batch.block_size;
    const int64_t blocks_used = (a.start_pos + n + batch.block_size - 1) / batch.block_size;
    if (a.start_pos < 0 || blocks_used > batch.max_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("Attention: sequence ", s, " reaches position ", a.start_pos + n - 1,
                       " beyond its ", batch.max_blocks, "-block table"));
    }
    for (int64_t b = 0; b < blocks_used; ++b) {
      if (a.block_table[b] < 0 || a.block_table[b] >= cache_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("Attention: sequence ", s, " block ", b, " = ", a.block_table[b],
                         " is outside the cache [0, ", cache_blocks, ")"));
      }
    }
    attention_seqs_.push_back(a);
  }
  CpuAttention(pool_.get(), *kernels_, attention_seqs_);
  return absl::OkStatus();
}

absl::Status CpuBackend::SwiGlu(const Tensor& a_t, const Tensor& b_t, const Tensor& y_t) {
  RETURN_IF_ERROR(CheckSameSize("SwiGlu", a_t, b_t, "b"));
  RETURN_IF_ERROR(CheckSameSize("SwiGlu", a_t, y_t, "y"));
  const int64_t n = a_t.numel();
  MEMSERVE_HOST_DATA(ap, a_t, DType::kF32, "SwiGlu a");
  MEMSERVE_HOST_DATA(bp, b_t, DType::kF32, "SwiGlu b");
  MEMSERVE_HOST_DATA(yp, y_t, DType::kF32, "SwiGlu y");
  const float* a = static_cast<const float*>(ap);
  const float* b = static_cast<const float*>(bp);
  float* y = static_cast<float*>(yp);
  pool_->ParallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        kernels_->silu_mul(a + begin, b + begin, y + begin, end - begin);
      },
      /*min_chunk=*/16384);
  return absl::OkStatus();
}

absl::Status CpuBackend::Add(const Tensor& x_t, const Tensor& y_t) {
  RETURN_IF_ERROR(CheckSameSize("Add", x_t, y_t, "y"));
  const int64_t n = x_t.numel();
  MEMSERVE_HOST_DATA(xp, x_t, DType::kF32, "Add x");
  MEMSERVE_HOST_DATA(yp, y_t, DType::kF32, "Add y");
  const float* x = static_cast<const float*>(xp);
  float* y = static_cast<float*>(yp);
  pool_->ParallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) y[i] += x[i];
      },
      /*min_chunk=*/65536);
  return absl::OkStatus();
}

absl::Status CpuBackend::SigmoidGateRows(const Tensor& gate_t, const Tensor& x_t) {
  RETURN_IF_ERROR(CheckSigmoidGateRowsShapes(gate_t, x_t));
  const int64_t rows = x_t.shape[0];
  const int64_t cols = x_t.shape[1];
  MEMSERVE_HOST_DATA(gp, gate_t, DType::kF32, "SigmoidGateRows gate");
  MEMSERVE_HOST_DATA(xp, x_t, DType::kF32, "SigmoidGateRows x");
  const float* gate = static_cast<const float*>(gp);
  float* x = static_cast<float*>(xp);
  for (int64_t r = 0; r < rows; ++r) {
    const float g = Sigmoid(gate[r]);
    float* xr = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) xr[c] *= g;
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::MemorySelect(const MemorySelectArgs& a) {
  RETURN_IF_ERROR(CheckMemorySelectShapes(a));
  const int64_t n_tokens = a.queries.shape[0];
  CpuMemorySelectArgs c;
  c.n_tokens = n_tokens;
  c.heads = a.heads;
  c.n_keys = a.n_keys;
  c.knn = a.knn;
  c.k_dim = a.k_dim;
  MEMSERVE_HOST_DATA(qp, a.queries, DType::kF32, "MemorySelect queries");
  MEMSERVE_WEIGHT_DATA(c.keys, a.keys, "MemorySelect keys");
  MEMSERVE_HOST_DATA(rp, a.rows, DType::kI64, "MemorySelect rows");
  MEMSERVE_HOST_DATA(wp, a.weights, DType::kF32, "MemorySelect weights");
  c.queries = static_cast<const float*>(qp);
  c.keys_dtype = a.keys.dtype;
  c.rows = static_cast<int64_t*>(rp);
  c.weights = static_cast<float*>(wp);
  if (a.scores.present()) {
    MEMSERVE_HOST_DATA(sp, a.scores, DType::kF32, "MemorySelect scores");
    c.scores = static_cast<float*>(sp);
  }
  memory_select_.Run(pool_.get(), *kernels_, c);
  return absl::OkStatus();
}

absl::Status CpuBackend::ValueGather(const Tensor& values, const Tensor& rows_t,
                                     const Tensor& weights_t, int64_t col_begin, int64_t col_end,
                                     const Tensor& out_t) {
  RETURN_IF_ERROR(CheckValueGatherShapes(values, rows_t, weights_t, col_begin, col_end, out_t));
  const int64_t table_rows = values.shape[0];
  const int64_t v_dim = values.shape[1];
  const int64_t n_tokens = out_t.shape[0];
  CpuValueGatherArgs c;
  c.n_tokens = n_tokens;
  c.picks = rows_t.numel() / n_tokens;
  c.v_dim = v_dim;
  MEMSERVE_WEIGHT_DATA(c.values, values, "ValueGather values");
  MEMSERVE_HOST_DATA(rp, rows_t, DType::kI64, "ValueGather rows");
  MEMSERVE_HOST_DATA(wp, weights_t, DType::kF32, "ValueGather weights");
  MEMSERVE_HOST_DATA(op, out_t, DType::kF32, "ValueGather out");
  c.values_dtype = values.dtype;
  c.rows = static_cast<const int64_t*>(rp);
  c.weights = static_cast<const float*>(wp);
  c.col_begin = col_begin;
  c.col_end = col_end;
  c.out = static_cast<float*>(op);
  for (int64_t i = 0; i < rows_t.numel(); ++i) {
    if (c.rows[i] < 0 || c.rows[i] >= table_rows) {
      return absl::InvalidArgumentError(absl::StrCat("ValueGather: rows[", i, "] = ", c.rows[i],
                                                     " is outside the table [0, ", table_rows,
                                                     ")"));
    }
  }
  CpuValueGather(pool_.get(), *kernels_, c);
  return absl::OkStatus();
}

}  // namespace memserve
