// Ctrl-C (SIGINT) for an interactive program that must keep running: the
// signal only writes a byte to a pipe, and the program reads the pipe where it
// can act (poll() at a prompt, a watcher thread during a blocking call).
#ifndef MEMSERVE_CLIENTS_CLI_INTERRUPT_H_
#define MEMSERVE_CLIENTS_CLI_INTERRUPT_H_

#include <atomic>
#include <functional>
#include <thread>

namespace memserve {
namespace cli {

// While it exists, SIGINT does not end the process: each one makes fd()
// readable (one byte per signal). At most one instance at a time; the previous
// SIGINT disposition is restored on destruction. Not thread-safe itself; the
// signal may arrive on any thread.
class SigintPipe {
 public:
  SigintPipe();
  ~SigintPipe();
  SigintPipe(const SigintPipe&) = delete;
  SigintPipe& operator=(const SigintPipe&) = delete;

  // Readable while interrupts are pending; -1 if the pipe could not be made
  // (then SIGINT keeps its default action).
  int fd() const { return read_fd_; }

  // Reads the pending interrupts without blocking; returns how many there were.
  int Drain();

 private:
  int read_fd_ = -1;
};

// While it exists, a thread waits for interrupts on `pipe` and calls
// `on_interrupt` for each (on that thread). For a blocking call that can be
// cancelled from another thread, such as a gRPC stream (TryCancel).
class OnInterrupt {
 public:
  OnInterrupt(SigintPipe& pipe, std::function<void()> on_interrupt);
  ~OnInterrupt();  // stops and joins the thread
  OnInterrupt(const OnInterrupt&) = delete;
  OnInterrupt& operator=(const OnInterrupt&) = delete;

  // Interrupts seen so far.
  int count() const { return count_.load(); }

 private:
  void Run(SigintPipe& pipe, const std::function<void()>& on_interrupt);

  int stop_pipe_[2] = {-1, -1};
  std::atomic<int> count_{0};
  std::thread thread_;
};

}  // namespace cli
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_CLI_INTERRUPT_H_
