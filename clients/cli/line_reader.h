// Reading the user's lines for `memserve-cli chat`: with libedit's line
// editing and history when standard input is a terminal, plain reads when it
// is a pipe or file. Both stop waiting when Ctrl-C (SigintPipe) arrives.
#ifndef MEMSERVE_CLIENTS_CLI_LINE_READER_H_
#define MEMSERVE_CLIENTS_CLI_LINE_READER_H_

#include <memory>
#include <string>

#include "clients/cli/interrupt.h"

namespace memserve {
namespace cli {

class LineReader {
 public:
  enum class Result {
    kLine,         // a line (without its newline) is in *line
    kEof,          // end of input (Ctrl-D at an empty line on a terminal)
    kInterrupted,  // Ctrl-C; *line holds what had been typed of the line
  };

  // A reader of standard input: libedit's when `terminal` (the prompt,
  // echo and editing go to stderr), else plain. `interrupts` must outlive
  // the reader.
  static std::unique_ptr<LineReader> Create(bool terminal, const std::string& prompt,
                                            SigintPipe& interrupts);

  virtual ~LineReader() = default;

  // Blocks until a line, the end of input or an interrupt.
  virtual Result Read(std::string* line) = 0;

  // Remembers `line` for the history (up/down arrows); no-op when plain.
  virtual void AddHistory(const std::string& line) = 0;
};

}  // namespace cli
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_CLI_LINE_READER_H_
