// How a host range is copied to the device through pinned staging buffers:
// cut into chunks of at most `chunk_bytes`, chunk i staged in buffer
// i % buffers, so that the host copy of one chunk overlaps the DMA of the
// one before. Pure planning (no CUDA), tested on any machine.
#ifndef MEMSERVE_ENGINE_BACKEND_CUDA_STAGING_H_
#define MEMSERVE_ENGINE_BACKEND_CUDA_STAGING_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace memserve::cuda {

struct StagingChunk {
  size_t offset = 0;  // into the source and the destination
  size_t bytes = 0;   // 1..chunk_bytes
  int buffer = 0;     // which staging buffer, in [0, buffers)
};

// The chunks of a `bytes`-byte copy, in order, covering [0, bytes) exactly
// (none for 0 bytes). REQUIRES: chunk_bytes >= 1, buffers >= 1.
std::vector<StagingChunk> PlanStagingChunks(size_t bytes, size_t chunk_bytes, int buffers);

// Rows per chunk when `rows` rows of `row_bytes` bytes each (a column slice
// of a table, copied row by row) go through staging buffers of
// `chunk_bytes`: as many whole rows as fit, at least 1, at most `rows`
// (0 when rows is 0). REQUIRES: row_bytes >= 1.
int64_t RowsPerChunk(int64_t rows, size_t row_bytes, size_t chunk_bytes);

// "12.3 GB/s" style rate: bytes / seconds / 1e9; 0 when seconds <= 0.
double GigabytesPerSecond(size_t bytes, double seconds);

}  // namespace memserve::cuda

#endif  // MEMSERVE_ENGINE_BACKEND_CUDA_STAGING_H_
