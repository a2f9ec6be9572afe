#include "clients/cli/line_reader.h"

#include <histedit.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cwchar>

namespace memserve {
namespace cli {
namespace {

// Waits until `fd` is readable (true) or an interrupt is pending (false,
// after consuming it; also on a poll error).
bool WaitReadable(int fd, SigintPipe& interrupts) {
  while (true) {
    struct pollfd fds[2] = {{fd, POLLIN, 0}, {interrupts.fd(), POLLIN, 0}};
    const int n = poll(fds, interrupts.fd() >= 0 ? 2 : 1, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (interrupts.fd() >= 0 && fds[1].revents != 0) {
      interrupts.Drain();
      return false;
    }
    return true;
  }
}

// Standard input as it comes, split at newlines.
class PlainReader : public LineReader {
 public:
  explicit PlainReader(SigintPipe& interrupts) : interrupts_(interrupts) {}

  Result Read(std::string* line) override {
    while (true) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        line->assign(buffer_, 0, nl);
        buffer_.erase(0, nl + 1);
        return Result::kLine;
      }
      if (eof_) {
        if (buffer_.empty()) return Result::kEof;
        line->swap(buffer_);
        buffer_.clear();
        return Result::kLine;
      }
      if (!WaitReadable(STDIN_FILENO, interrupts_)) {
        line->assign(buffer_);
        buffer_.clear();
        return Result::kInterrupted;
      }
      char chunk[4096];
      const ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        eof_ = true;
      } else {
        buffer_.append(chunk, static_cast<size_t>(n));
      }
    }
  }

  void AddHistory(const std::string&) override {}

 private:
  SigintPipe& interrupts_;
  std::string buffer_;
  bool eof_ = false;
};

// libedit, reading its characters through GetChar so that an interrupt ends
// el_gets (libedit's own signal handling stays off: it would re-raise the
// signal to the whole process group).
class EditLineReader : public LineReader {
 public:
  EditLineReader(const std::string& prompt, SigintPipe& interrupts)
      : prompt_(prompt), interrupts_(interrupts) {
    // Typed text is UTF-8 (what the server takes): libedit decodes it with
    // the locale's LC_CTYPE.
    std::setlocale(LC_CTYPE, "");
    if (MB_CUR_MAX == 1) std::setlocale(LC_CTYPE, "C.UTF-8");
    history_ = history_init();
    HistEvent ev;
    history(history_, &ev, H_SETSIZE, 1000);
    history(history_, &ev, H_SETUNIQUE, 1);
    el_ = el_init("memserve-cli", stdin, stderr, stderr);
    el_set(el_, EL_CLIENTDATA, this);
    el_set(el_, EL_EDITOR, "emacs");
    el_set(el_, EL_PROMPT, &EditLineReader::Prompt);
    el_set(el_, EL_HIST, history, history_);
    el_set(el_, EL_GETCFN, &EditLineReader::GetChar);
    el_source(el_, nullptr);  // ~/.editrc, as other libedit programs
  }

  ~EditLineReader() override {
    el_end(el_);
    history_end(history_);
  }

  Result Read(std::string* line) override {
    interrupted_ = false;
    interrupted_line_.clear();
    int count = 0;
    const char* text = el_gets(el_, &count);
    if (interrupted_) {
      *line = interrupted_line_;
      return Result::kInterrupted;
    }
    if (text == nullptr || count <= 0) return Result::kEof;
    line->assign(text, static_cast<size_t>(count));
    if (!line->empty() && line->back() == '\n') line->pop_back();
    return Result::kLine;
  }

  void AddHistory(const std::string& line) override {
    HistEvent ev;
    history(history_, &ev, H_ENTER, line.c_str());
  }

 private:
  static EditLineReader* Self(EditLine* el) {
    void* self = nullptr;
    el_get(el, EL_CLIENTDATA, &self);
    return static_cast<EditLineReader*>(self);
  }

  static char* Prompt(EditLine* el) { return const_cast<char*>(Self(el)->prompt_.c_str()); }

  // libedit's el_rfunc_t: one character into *out; 1 read, 0 end of input,
  // -1 error (here: an interrupt, which ends el_gets).
  static int GetChar(EditLine* el, wchar_t* out) {
    EditLineReader* self = Self(el);
    std::mbstate_t state = {};
    char bytes[MB_LEN_MAX];
    size_t have = 0;
    while (true) {
      if (!WaitReadable(STDIN_FILENO, self->interrupts_)) {
        const LineInfo* li = el_line(el);
        self->interrupted_line_.assign(li->buffer, li->lastchar);
        self->interrupted_ = true;
        errno = EINTR;
        return -1;
      }
      char c;
      const ssize_t n = read(STDIN_FILENO, &c, 1);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return n == 0 ? 0 : -1;
      bytes[have++] = c;
      wchar_t wc;
      const size_t r = std::mbrtowc(&wc, bytes, have, &state);
      if (r == static_cast<size_t>(-2) && have < sizeof bytes) {
        state = {};  // incomplete: decode again with the next byte
        continue;
      }
      // Not decodable in this locale: pass the byte on as is.
      *out = r == static_cast<size_t>(-1) || r == static_cast<size_t>(-2)
                 ? static_cast<wchar_t>(static_cast<unsigned char>(bytes[0]))
                 : wc;
      return 1;
    }
  }

  std::string prompt_;
  SigintPipe& interrupts_;
  History* history_ = nullptr;
  EditLine* el_ = nullptr;
  bool interrupted_ = false;
  std::string interrupted_line_;
};

}  // namespace

std::unique_ptr<LineReader> LineReader::Create(bool terminal, const std::string& prompt,
                                               SigintPipe& interrupts) {
  if (terminal) return std::make_unique<EditLineReader>(prompt, interrupts);
  return std::make_unique<PlainReader>(interrupts);
}

}  // namespace cli
}  // namespace memserve
