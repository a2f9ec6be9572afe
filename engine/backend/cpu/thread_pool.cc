#include "engine/backend/cpu/thread_pool.h"

#include <algorithm>

namespace memserve {
namespace {

// The pool whose loop body the current thread is running, if any.
thread_local const ThreadPool* tls_current_pool = nullptr;

// Spin iterations before a thread blocks. Ops of one forward pass follow each
// other within microseconds, so a short spin avoids a futex wake per op.
constexpr int kSpinIterations = 4096;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class ScopedCurrentPool {
 public:
  explicit ScopedCurrentPool(const ThreadPool* pool) : saved_(tls_current_pool) {
    tls_current_pool = pool;
  }
  ~ScopedCurrentPool() { tls_current_pool = saved_; }

 private:
  const ThreadPool* saved_;
};

}  // namespace

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads > 0
                       ? num_threads
                       : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))) {
  workers_.reserve(num_threads_ - 1);
  for (int i = 1; i < num_threads_; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                             int64_t min_chunk) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  if (num_threads_ == 1 || n < 2 * min_chunk || tls_current_pool == this) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  // A few chunks per thread balance load when a thread is slow to wake.
  const int64_t target_chunks = static_cast<int64_t>(num_threads_) * 4;
  const int64_t chunk = std::max(min_chunk, (n + target_chunks - 1) / target_chunks);
  const int64_t num_chunks = (n + chunk - 1) / chunk;
  {
    std::unique_lock<std::mutex> lock(mu_);
    // Workers that joined the previous job may still be leaving RunChunks.
    while (active_.load(std::memory_order_acquire) > 0) done_cv_.wait(lock);
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    num_chunks_ = num_chunks;
    next_chunk_.store(0, std::memory_order_relaxed);
    chunks_done_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    if (sleeping_ > 0) work_cv_.notify_all();
  }
  {
    ScopedCurrentPool scoped(this);
    RunChunks();
  }
  // Every fn call has returned once chunks_done_ == num_chunks (workers count
  // a chunk after its call returns), so `fn` is no longer referenced.
  for (int i = 0; i < kSpinIterations; ++i) {
    if (chunks_done_.load(std::memory_order_acquire) == num_chunks) return;
    CpuRelax();
  }
  std::unique_lock<std::mutex> lock(mu_);
  while (chunks_done_.load(std::memory_order_acquire) < num_chunks) done_cv_.wait(lock);
}

void ThreadPool::RunChunks() {
  for (;;) {
    const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= num_chunks_) break;
    const int64_t begin = c * chunk_;
    const int64_t end = std::min(n_, begin + chunk_);
    (*fn_)(begin, end);
    chunks_done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::WorkerLoop() {
  ScopedCurrentPool scoped(this);
  uint64_t seen = 0;
  for (;;) {
    for (int i = 0; i < kSpinIterations; ++i) {
      if (generation_.load(std::memory_order_acquire) != seen) break;
      CpuRelax();
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stop_ && generation_.load(std::memory_order_relaxed) == seen) {
        ++sleeping_;
        work_cv_.wait(lock);
        --sleeping_;
      }
      if (stop_) return;
      seen = generation_.load(std::memory_order_relaxed);
      // The job may be fully claimed already (this thread woke late).
      if (next_chunk_.load(std::memory_order_relaxed) >= num_chunks_) continue;
      active_.fetch_add(1, std::memory_order_relaxed);
    }
    RunChunks();
    {
      std::lock_guard<std::mutex> lock(mu_);
      active_.fetch_sub(1, std::memory_order_release);
    }
    done_cv_.notify_all();
  }
}

}  // namespace memserve
