// StopStringMatcher: finds stop strings in streamed text and holds back any
// tail that could still become one, so a client never sees the start of a
// stop string that is later cut.
#ifndef MEMSERVE_ENGINE_STOP_STRINGS_H_
#define MEMSERVE_ENGINE_STOP_STRINGS_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace memserve {

class StopStringMatcher {
 public:
  // Empty strings in `stops` are ignored. When `include_stop` is set the
  // matched stop string is part of the emitted text.
  explicit StopStringMatcher(std::vector<std::string> stops, bool include_stop = false);

  // Appends `text` (whole UTF-8 characters) and returns what may be emitted
  // now. Once a stop string matched, stopped() is true, the returned text
  // ends at (or after, with include_stop) the earliest match, and further
  // Push calls return "".
  std::string Push(absl::string_view text);
  // End of stream without a match: returns the held-back tail.
  std::string Flush();

  bool stopped() const { return stopped_; }
  // The stop string that matched ("" until stopped()).
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  bool include_stop_;
  std::string pending_;  // held back: a suffix that is a prefix of some stop
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_STOP_STRINGS_H_
