#include "engine/backend/cuda/staging.h"

#include <algorithm>

namespace memserve::cuda {

std::vector<StagingChunk> PlanStagingChunks(size_t bytes, size_t chunk_bytes, int buffers) {
  std::vector<StagingChunk> out;
  if (chunk_bytes == 0 || buffers < 1) return out;
  out.reserve(bytes / chunk_bytes + 1);
  for (size_t offset = 0; offset < bytes; offset += chunk_bytes) {
    StagingChunk c;
    c.offset = offset;
    c.bytes = std::min(chunk_bytes, bytes - offset);
    c.buffer = static_cast<int>(out.size() % static_cast<size_t>(buffers));
    out.push_back(c);
  }
  return out;
}

int64_t RowsPerChunk(int64_t rows, size_t row_bytes, size_t chunk_bytes) {
  if (rows <= 0 || row_bytes == 0) return 0;
  const int64_t fit = static_cast<int64_t>(chunk_bytes / row_bytes);
  return std::min(rows, std::max<int64_t>(1, fit));
}

double GigabytesPerSecond(size_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

}  // namespace memserve::cuda
