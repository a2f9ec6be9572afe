#include "clients/cli/interrupt.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace memserve {
namespace cli {
namespace {

// The write end of the active SigintPipe; -1 when none.
std::atomic<int> g_write_fd{-1};
struct sigaction g_previous;

void OnSigint(int) {
  const int saved_errno = errno;
  const int fd = g_write_fd.load();
  if (fd >= 0) {
    const char byte = 1;
    // A full pipe means enough interrupts are pending already.
    [[maybe_unused]] const ssize_t n = write(fd, &byte, 1);
  }
  errno = saved_errno;
}

}  // namespace

SigintPipe::SigintPipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return;
  read_fd_ = fds[0];
  g_write_fd.store(fds[1]);
  struct sigaction action = {};
  action.sa_handler = OnSigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking calls elsewhere go on; we poll the pipe
  sigaction(SIGINT, &action, &g_previous);
}

SigintPipe::~SigintPipe() {
  if (read_fd_ < 0) return;
  sigaction(SIGINT, &g_previous, nullptr);
  close(g_write_fd.exchange(-1));
  close(read_fd_);
}

int SigintPipe::Drain() {
  if (read_fd_ < 0) return 0;
  int count = 0;
  char buf[64];
  ssize_t n;
  while ((n = read(read_fd_, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) count += static_cast<int>(n);
  }
  return count;
}

OnInterrupt::OnInterrupt(SigintPipe& pipe, std::function<void()> on_interrupt) {
  if (pipe.fd() < 0 || pipe2(stop_pipe_, O_CLOEXEC) != 0) return;
  thread_ = std::thread([this, &pipe, f = std::move(on_interrupt)] { Run(pipe, f); });
}

OnInterrupt::~OnInterrupt() {
  if (!thread_.joinable()) return;
  const char byte = 0;
  while (write(stop_pipe_[1], &byte, 1) < 0 && errno == EINTR) {
  }
  thread_.join();
  close(stop_pipe_[0]);
  close(stop_pipe_[1]);
}

void OnInterrupt::Run(SigintPipe& pipe, const std::function<void()>& on_interrupt) {
  while (true) {
    struct pollfd fds[2] = {{pipe.fd(), POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    for (int n = pipe.Drain(); n > 0; --n) {
      count_.fetch_add(1);
      on_interrupt();
    }
  }
}

}  // namespace cli
}  // namespace memserve
