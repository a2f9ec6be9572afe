#include "clients/loadgen/loadgen_lib.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "clients/bench/stats.h"

namespace memserve {
namespace loadgen {

double Percentile(const std::vector<double>& sorted_values, double p) {
  return bench::Percentile(sorted_values, p);
}

Percentiles Summarize(std::vector<double> values) {
  Percentiles p;
  p.count = values.size();
  if (values.empty()) return p;
  std::sort(values.begin(), values.end());
  p.p50 = Percentile(values, 50);
  p.p90 = Percentile(values, 90);
  p.p99 = Percentile(values, 99);
  return p;
}

Report MakeReport(const std::vector<RequestRecord>& records, int streams, double wall_s) {
  Report r;
  r.streams = streams;
  r.requests = static_cast<int64_t>(records.size());
  r.wall_s = wall_s;
  std::vector<double> ttft, itl, latency;
  for (const RequestRecord& rec : records) {
    if (rec.code != "OK") {
      r.failed_completion_tokens += rec.completion_tokens;
      ErrorCount& e = r.errors[rec.code];
      if (e.count++ == 0) e.example = rec.message;
      continue;
    }
    ++r.ok;
    r.completion_tokens += rec.completion_tokens;
    if (rec.ttft_ms) ttft.push_back(*rec.ttft_ms);
    itl.insert(itl.end(), rec.itl_ms.begin(), rec.itl_ms.end());
    latency.push_back(rec.latency_ms);
  }
  if (wall_s > 0) {
    r.tokens_per_s = static_cast<double>(r.completion_tokens) / wall_s;
    r.requests_per_s = static_cast<double>(r.ok) / wall_s;
  }
  r.ttft_ms = Summarize(std::move(ttft));
  r.itl_ms = Summarize(std::move(itl));
  r.latency_ms = Summarize(std::move(latency));
  return r;
}

namespace {

nlohmann::json PercentilesToJson(const Percentiles& p) {
  if (p.count == 0) {
    return {{"p50", nullptr}, {"p90", nullptr}, {"p99", nullptr}, {"count", 0}};
  }
  return {{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}, {"count", p.count}};
}

std::string FormatPercentiles(const Percentiles& p) {
  if (p.count == 0) return "-";
  return absl::StrFormat("p50 %.2f  p90 %.2f  p99 %.2f  (n=%d)", p.p50, p.p90, p.p99, p.count);
}

}  // namespace

nlohmann::json ReportToJson(const Report& r) {
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [code, e] : r.errors) {
    errors[code] = {{"count", e.count}, {"example", e.example}};
  }
  return {
      {"streams", r.streams},
      {"requests", r.requests},
      {"ok", r.ok},
      {"failed", r.requests - r.ok},
      {"completion_tokens", r.completion_tokens},
      {"failed_completion_tokens", r.failed_completion_tokens},
      {"wall_s", r.wall_s},
      {"tokens_per_s", r.tokens_per_s},
      {"requests_per_s", r.requests_per_s},
      {"ttft_ms", PercentilesToJson(r.ttft_ms)},
      {"itl_ms", PercentilesToJson(r.itl_ms)},
      {"latency_ms", PercentilesToJson(r.latency_ms)},
      {"errors", errors},
  };
}

std::string FormatReport(const Report& r) {
  std::string out = absl::StrFormat("%d streams, %d requests (%d ok, %d failed)\n", r.streams,
                                    r.requests, r.ok, r.requests - r.ok);
  absl::StrAppendFormat(&out, "  wall time          %.3f s\n", r.wall_s);
  absl::StrAppendFormat(&out, "  completion tokens  %d", r.completion_tokens);
  if (r.failed_completion_tokens > 0) {
    absl::StrAppendFormat(&out, "  (and %d in failed calls, not counted)",
                          r.failed_completion_tokens);
  }
  absl::StrAppend(&out, "\n");
  absl::StrAppendFormat(&out, "  decode throughput  %.1f tokens/s  (%.2f requests/s)\n",
                        r.tokens_per_s, r.requests_per_s);
  absl::StrAppend(&out, "  TTFT ms            ", FormatPercentiles(r.ttft_ms), "\n");
  absl::StrAppend(&out, "  ITL ms             ", FormatPercentiles(r.itl_ms), "\n");
  absl::StrAppend(&out, "  latency ms         ", FormatPercentiles(r.latency_ms), "\n");
  for (const auto& [code, e] : r.errors) {
    absl::StrAppend(&out, "  failed             ", e.count, " x ", code);
    if (!e.example.empty()) absl::StrAppend(&out, ", e.g. \"", e.example, "\"");
    absl::StrAppend(&out, "\n");
  }
  return out;
}

absl::StatusOr<int> PickMaxTokens(std::optional<int> flag, int longest_prompt_tokens,
                                  int max_seqlen) {
  const int room = max_seqlen - longest_prompt_tokens;
  if (flag) {
    if (*flag < 1) return absl::InvalidArgumentError("--max_tokens must be >= 1");
    if (*flag > room) {
      return absl::InvalidArgumentError(
          absl::StrCat("--max_tokens ", *flag, " does not fit: the longest prompt is ",
                       longest_prompt_tokens, " tokens and the model's context (max_seqlen) ",
                       max_seqlen, ", so at most ", std::max(room, 0)));
    }
    return *flag;
  }
  if (room < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the longest prompt is ", longest_prompt_tokens,
        " tokens, which leaves no room to generate in the model's context (max_seqlen) of ",
        max_seqlen, " tokens; use a shorter --prompt or --prompts_file"));
  }
  return std::min(kLoadgenMaxTokens, room);
}

absl::StatusOr<std::vector<std::string>> ParsePromptsJsonl(absl::string_view content) {
  std::vector<std::string> prompts;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_no, " is not a JSON object"));
    }
    const auto it = j.find("prompt");
    if (it == j.end() || !it->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, " has no string \"prompt\""));
    }
    prompts.push_back(it->get<std::string>());
  }
  if (prompts.empty()) return absl::InvalidArgumentError("no prompts in the file");
  return prompts;
}

}  // namespace loadgen
}  // namespace memserve
