// The server's log: one line per event on stderr, each with a UTC
// timestamp, a level, a message and key=value fields, as text (default) or
// JSON (`memserve serve --log_format json`, for log collectors). Every line
// the server writes goes through here: its lifecycle, one line per request,
// errors, and the lines gRPC and protobuf log (docs/operations.md, "Logs").
//
//   LogLine(LogLevel::kInfo, "request").Field("id", "req-7").Field("total_ms", 10.5).Write();
//
// text: 2026-11-30T23:14:28.123Z INFO request id=req-7 total_ms=10.5
// json:
// {"ts":"2026-11-30T23:14:28.123Z","level":"info","msg":"request","id":"req-7","total_ms":10.5}
//
// In text, a value that is empty or holds a space, '"', '=' or a control
// character is quoted ("...") with \" \\ \n \t escapes; in JSON, strings are
// escaped and bytes that are not UTF-8 become U+FFFD.
// Thread-safety: everything here is safe from any thread; one line is one
// write(2), so lines of concurrent threads never interleave.
#ifndef MEMSERVE_SERVER_LOGGING_H_
#define MEMSERVE_SERVER_LOGGING_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace memserve {

enum class LogFormat { kText, kJson };
enum class LogLevel { kInfo, kWarning, kError };

// "text" or "json"; InvalidArgument naming --log_format otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
// The format of every line written from now on (process-wide; default text).
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();

class LogLine {
 public:
  LogLine(LogLevel level, absl::string_view message);

  LogLine& Field(absl::string_view key, absl::string_view value);
  LogLine& Field(absl::string_view key, const char* value) {
    return Field(key, absl::string_view(value));
  }
  LogLine& Field(absl::string_view key, const std::string& value) {
    return Field(key, absl::string_view(value));
  }
  LogLine& Field(absl::string_view key, int64_t value);
  LogLine& Field(absl::string_view key, int value) { return Field(key, int64_t{value}); }
  // Up to 3 decimals, trailing zeros dropped ("0.2", "10.5", "3").
  LogLine& Field(absl::string_view key, double value);
  LogLine& Field(absl::string_view key, bool value);

  // The line (without the newline) as it would be written at `now`, in
  // `format`.
  std::string Format(LogFormat format, absl::Time now) const;
  // Writes the line, with the current time and format, to stderr.
  void Write() const;

 private:
  struct Value {
    std::string text;  // as written in the text format (unquoted)
    bool raw = false;  // a number or bool: JSON writes it unquoted
  };
  LogLevel level_;
  std::string message_;
  std::vector<std::pair<std::string, Value>> fields_;
};

// Shorthands for a line without fields.
void LogInfo(absl::string_view message);
void LogWarning(absl::string_view message);
void LogError(absl::string_view message);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_LOGGING_H_
