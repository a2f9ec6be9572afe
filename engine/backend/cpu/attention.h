// Causal attention over a contiguous or paged K/V cache on the CPU
// (AttentionArgs, engine/backend/backend.h).
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_ATTENTION_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_ATTENTION_H_

#include "absl/types/span.h"
#include "engine/backend/backend.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/thread_pool.h"

namespace memserve {

// Runs every sequence of `seqs` in one parallel pass over (sequence, token,
// head) items. Scratch is thread-local (no allocation once a thread has seen
// the longest context).
void CpuAttention(ThreadPool* pool, const CpuKernels& kernels,
                  absl::Span<const AttentionArgs> seqs);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_ATTENTION_H_
