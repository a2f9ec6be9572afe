#include "server/logging.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};

const char* LevelName(LogLevel level, bool upper) {
  switch (level) {
    case LogLevel::kInfo:
      return upper ? "INFO" : "info";
    case LogLevel::kWarning:
      return upper ? "WARNING" : "warning";
    case LogLevel::kError:
      return upper ? "ERROR" : "error";
  }
  return upper ? "INFO" : "info";
}

// RFC 3339 in UTC with milliseconds: 2026-11-30T23:14:28.123Z.
std::string Timestamp(absl::Time now) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, absl::UTCTimeZone());
}

bool NeedsQuotes(absl::string_view value) {
  if (value.empty()) return true;
  for (const char c : value) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '"' || c == '=' || u < 0x20 || u == 0x7f) return true;
  }
  return false;
}

// A text-format value: as is, or quoted with \" \\ \n \r \t (other control
// bytes as \xHH).
std::string TextValue(absl::string_view value) {
  if (!NeedsQuotes(value)) return std::string(value);
  std::string out = "\"";
  for (const char c : value) {
    const unsigned char u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          absl::StrAppend(&out, absl::StrFormat("\\x%02x", u));
        } else {
          out += c;
        }
    }
  }
  out += "\"";
  return out;
}

// The message on a text line: control characters escaped, so that the
// line stays one line.
std::string TextMessage(absl::string_view message) {
  std::string out;
  for (const char c : message) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(&out, absl::StrFormat("\\x%02x", u));
    } else {
      out += c;
    }
  }
  return out;
}

void WriteAll(const std::string& line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report it
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_format must be 'text' or 'json', got '", name, "'"));
}

void SetLogFormat(LogFormat format) { g_format.store(format); }
LogFormat GetLogFormat() { return g_format.load(); }

LogLine::LogLine(LogLevel level, absl::string_view message) : level_(level), message_(message) {}

LogLine& LogLine::Field(absl::string_view key, absl::string_view value) {
  fields_.emplace_back(std::string(key), Value{std::string(value), false});
  return *this;
}

LogLine& LogLine::Field(absl::string_view key, int64_t value) {
  fields_.emplace_back(std::string(key), Value{absl::StrCat(value), true});
  return *this;
}

LogLine& LogLine::Field(absl::string_view key, double value) {
  if (!std::isfinite(value)) return Field(key, absl::string_view(absl::StrCat(value)));
  std::string text = absl::StrFormat("%.3f", value);
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  if (text == "-0") text = "0";
  fields_.emplace_back(std::string(key), Value{text, true});
  return *this;
}

LogLine& LogLine::Field(absl::string_view key, bool value) {
  fields_.emplace_back(std::string(key), Value{value ? "true" : "false", true});
  return *this;
}

std::string LogLine::Format(LogFormat format, absl::Time now) const {
  if (format == LogFormat::kJson) {
    nlohmann::ordered_json j;
    j["ts"] = Timestamp(now);
    j["level"] = LevelName(level_, false);
    j["msg"] = message_;
    for (const auto& [key, value] : fields_) {
      if (value.raw) {
        j[key] = nlohmann::ordered_json::parse(value.text);
      } else {
        j[key] = value.text;
      }
    }
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  }
  std::string out =
      absl::StrCat(Timestamp(now), " ", LevelName(level_, true), " ", TextMessage(message_));
  for (const auto& [key, value] : fields_) {
    absl::StrAppend(&out, " ", key, "=", value.raw ? value.text : TextValue(value.text));
  }
  return out;
}

void LogLine::Write() const { WriteAll(Format(GetLogFormat(), absl::Now()) + "\n"); }

void LogInfo(absl::string_view message) { LogLine(LogLevel::kInfo, message).Write(); }
void LogWarning(absl::string_view message) { LogLine(LogLevel::kWarning, message).Write(); }
void LogError(absl::string_view message) { LogLine(LogLevel::kError, message).Write(); }

}  // namespace memserve
