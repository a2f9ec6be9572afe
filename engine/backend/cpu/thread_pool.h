// ThreadPool: a fixed set of worker threads for data-parallel loops
// (ParallelFor). The CPU backend runs every op through one of these.
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_THREAD_POOL_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace memserve {

// A fixed pool of `num_threads() - 1` worker threads; the thread calling
// ParallelFor is the remaining participant.
//
// Thread-safety: ParallelFor may be called from any thread. Calls from
// different outside threads are serialized (one loop runs at a time). A call
// made from inside a ParallelFor body (on a worker or on the caller) runs the
// whole nested range inline on that thread, so nesting never deadlocks.
// The destructor must not run concurrently with ParallelFor.
class ThreadPool {
 public:
  // `num_threads` <= 0 means one per hardware thread
  // (std::thread::hardware_concurrency(), at least 1).
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Participants in a loop: the workers plus the calling thread.
  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) over disjoint ranges that exactly cover [0, n), on
  // the workers and the calling thread, and returns when all calls returned.
  // Ranges are at least `min_chunk` long (except possibly the last one); when
  // n < 2 * min_chunk, or the pool has one thread, fn(0, n) runs inline.
  // Nothing runs when n <= 0. REQUIRES: fn does not throw.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t min_chunk = 1);

 private:
  void WorkerLoop();
  // Claims and runs chunks of the current job until none are left.
  void RunChunks();

  const int num_threads_;
  std::vector<std::thread> workers_;

  // std::mutex rather than absl::Mutex so that ThreadSanitizer understands
  // the synchronization with Debian's (uninstrumented) Abseil; std::mutex is
  // not a clang "capability", hence "guarded by" comments instead of
  // ABSL_GUARDED_BY.
  std::mutex call_mu_;  // serializes ParallelFor calls from outside threads

  // The current job. Written only under mu_ while active_ == 0, read by
  // workers after they registered in active_ (under mu_).
  std::mutex mu_;
  std::condition_variable work_cv_;  // workers wait here for a new generation
  std::condition_variable done_cv_;  // the caller waits here for chunks/active_
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  int64_t num_chunks_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  std::atomic<int64_t> chunks_done_{0};
  std::atomic<uint64_t> generation_{0};  // bumped once per job (under mu_)
  std::atomic<int> active_{0};           // workers inside RunChunks
  int sleeping_ = 0;                     // guarded by mu_: workers blocked in work_cv_
  bool stop_ = false;                    // guarded by mu_
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_THREAD_POOL_H_
