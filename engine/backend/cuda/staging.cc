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

double GigabytesPerSecond(size_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

}  // namespace memserve::cuda
