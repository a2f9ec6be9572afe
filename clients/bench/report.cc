#include "clients/bench/report.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace memserve {
namespace bench {
namespace {

using nlohmann::json;

json OrNull(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

json DistributionToJson(const Distribution& d) {
  json j = json::object();
  const bool none = d.count == 0;
  j["count"] = d.count;
  j["mean"] = none ? json(nullptr) : json(d.mean);
  j["median"] = none ? json(nullptr) : json(d.median);
  j["std"] = none ? json(nullptr) : json(d.stddev);
  for (const auto& [p, v] : d.percentiles) {
    j[absl::StrCat("p", p)] = none ? json(nullptr) : json(v);
  }
  return j;
}

// Most values of `times_ms` in one [k s, (k + 1) s) bucket.
double PeakPerSecond(const std::vector<double>& times_ms) {
  std::map<int64_t, int64_t> buckets;
  int64_t peak = 0;
  for (double t : times_ms) {
    peak = std::max(peak, ++buckets[static_cast<int64_t>(std::floor(t / 1000.0))]);
  }
  return static_cast<double>(peak);
}

// Most intervals [sent, sent + e2el) open at once.
int PeakConcurrency(const std::vector<RequestRecord>& records) {
  std::vector<std::pair<double, int>> events;  // (time, +1 start / -1 end); ends sort first
  for (const RequestRecord& r : records) {
    events.emplace_back(r.sent_s, 1);
    events.emplace_back(r.sent_s + r.e2el_ms / 1000.0, -1);
  }
  std::sort(events.begin(), events.end());
  int open = 0, peak = 0;
  for (const auto& [t, delta] : events) {
    open += delta;
    peak = std::max(peak, open);
  }
  return peak;
}

std::string Ms(const Distribution& d, double v) {
  return d.count == 0 ? "-" : absl::StrFormat("%.2f", v);
}

std::string PercentName(double p) { return absl::StrCat("p", p); }

}  // namespace

std::optional<double> RequestRecord::tpot_ms() const {
  if (output_tokens < 2 || !ttft_ms) return std::nullopt;
  return (e2el_ms - *ttft_ms) / static_cast<double>(output_tokens - 1);
}

std::vector<double> PerTokenGaps(const std::vector<double>& arrival_ms, double merge_window_ms) {
  std::vector<double> gaps;
  const size_t n = arrival_ms.size();
  if (n < 2) return gaps;
  gaps.reserve(n - 1);
  // Deliveries: maximal runs of tokens each within the window of the one
  // before. The first delivery's later tokens keep their (small) raw gaps:
  // there is no earlier delivery to split.
  size_t i = 1;
  while (i < n && arrival_ms[i] - arrival_ms[i - 1] <= merge_window_ms) {
    gaps.push_back(arrival_ms[i] - arrival_ms[i - 1]);
    ++i;
  }
  double previous_end = arrival_ms[i - 1];  // last token of the previous delivery
  while (i < n) {
    size_t j = i + 1;
    while (j < n && arrival_ms[j] - arrival_ms[j - 1] <= merge_window_ms) ++j;
    const double share = (arrival_ms[j - 1] - previous_end) / static_cast<double>(j - i);
    gaps.insert(gaps.end(), j - i, share);
    previous_end = arrival_ms[j - 1];
    i = j;
  }
  return gaps;
}

absl::StatusOr<Slo> ParseGoodput(absl::string_view value) {
  Slo slo;
  for (absl::string_view pair : absl::StrSplit(value, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    const std::vector<absl::string_view> kv = absl::StrSplit(pair, absl::MaxSplits(':', 1));
    double ms = 0;
    if (kv.size() != 2 || !absl::SimpleAtod(kv[1], &ms) || !(ms > 0) || std::isinf(ms)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--goodput: '", pair, "' is not KEY:MS with KEY ttft, tpot or e2el and MS > 0"));
    }
    std::optional<double>* slot = kv[0] == "ttft"   ? &slo.ttft_ms
                                  : kv[0] == "tpot" ? &slo.tpot_ms
                                  : kv[0] == "e2el" ? &slo.e2el_ms
                                                    : nullptr;
    if (slot == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("--goodput: unknown metric '", kv[0], "' in '",
                                                     pair, "' (use ttft, tpot or e2el)"));
    }
    if (slot->has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("--goodput: ", kv[0], " given twice"));
    }
    *slot = ms;
  }
  return slo;
}

absl::StatusOr<std::vector<double>> ParsePercentiles(absl::string_view value) {
  std::vector<double> out;
  std::set<double> seen;
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    item = absl::StripAsciiWhitespace(item);
    double p = 0;
    if (!absl::SimpleAtod(item, &p) || !(p > 0 && p <= 100)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--percentiles: '", item, "' is not a number in (0, 100]"));
    }
    if (!seen.insert(p).second) {
      return absl::InvalidArgumentError(absl::StrCat("--percentiles: ", item, " given twice"));
    }
    out.push_back(p);
  }
  return out;
}

bool MeetsSlo(const RequestRecord& r, const Slo& slo) {
  if (!r.ok()) return false;
  if (slo.ttft_ms && !(r.ttft_ms && *r.ttft_ms <= *slo.ttft_ms)) return false;
  if (slo.tpot_ms && r.tpot_ms().value_or(0) > *slo.tpot_ms) return false;
  if (slo.e2el_ms && r.e2el_ms > *slo.e2el_ms) return false;
  return true;
}

Summary MakeSummary(const std::vector<RequestRecord>& records, double duration_s,
                    const std::vector<double>& percentiles, const Slo& slo) {
  Summary s;
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2el, token_times;
  for (const RequestRecord& r : records) {
    if (!r.ok()) {
      ++s.failed;
      s.failed_output_tokens += r.output_tokens;
      ErrorCount& e = s.errors[r.code];
      if (e.count++ == 0) e.example = r.message;
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.input_tokens;
    s.total_output_tokens += r.output_tokens;
    if (r.ttft_ms) ttft.push_back(*r.ttft_ms);
    if (const std::optional<double> t = r.tpot_ms()) tpot.push_back(*t);
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    e2el.push_back(r.e2el_ms);
    token_times.insert(token_times.end(), r.token_times_ms.begin(), r.token_times_ms.end());
    if (!slo.empty() && MeetsSlo(r, slo)) ++s.good_requests;
  }
  if (duration_s > 0) {
    s.request_throughput = static_cast<double>(s.completed) / duration_s;
    s.output_throughput = static_cast<double>(s.total_output_tokens) / duration_s;
    s.total_token_throughput =
        static_cast<double>(s.total_input_tokens + s.total_output_tokens) / duration_s;
    if (!slo.empty()) s.request_goodput = static_cast<double>(s.good_requests) / duration_s;
  } else if (!slo.empty()) {
    s.request_goodput = 0;
  }
  s.max_output_tokens_per_s = PeakPerSecond(token_times);
  s.max_concurrent_requests = PeakConcurrency(records);
  s.ttft_ms = Summarize(std::move(ttft), percentiles);
  s.tpot_ms = Summarize(std::move(tpot), percentiles);
  s.itl_ms = Summarize(std::move(itl), percentiles);
  s.e2el_ms = Summarize(std::move(e2el), percentiles);
  return s;
}

json SummaryToJson(const Summary& s) {
  json errors = json::object();
  for (const auto& [code, e] : s.errors) {
    errors[code] = {{"count", e.count}, {"example", e.example}};
  }
  return {
      {"duration_s", s.duration_s},
      {"completed", s.completed},
      {"failed", s.failed},
      {"total_input_tokens", s.total_input_tokens},
      {"total_output_tokens", s.total_output_tokens},
      {"failed_output_tokens", s.failed_output_tokens},
      {"request_throughput", s.request_throughput},
      {"request_goodput", OrNull(s.request_goodput)},
      {"good_requests", s.good_requests},
      {"output_throughput", s.output_throughput},
      {"total_token_throughput", s.total_token_throughput},
      {"max_output_tokens_per_s", s.max_output_tokens_per_s},
      {"max_concurrent_requests", s.max_concurrent_requests},
      {"ttft_ms", DistributionToJson(s.ttft_ms)},
      {"tpot_ms", DistributionToJson(s.tpot_ms)},
      {"itl_ms", DistributionToJson(s.itl_ms)},
      {"e2el_ms", DistributionToJson(s.e2el_ms)},
      {"errors", errors},
  };
}

json RecordsToJson(const std::vector<RequestRecord>& records) {
  json scheduled = json::array(), sent = json::array(), input = json::array(),
       output = json::array(), ttft = json::array(), tpot = json::array(), itl = json::array(),
       e2el = json::array(), status = json::array(), messages = json::array(),
       finish = json::array();
  for (const RequestRecord& r : records) {
    scheduled.push_back(r.scheduled_s);
    sent.push_back(r.sent_s);
    input.push_back(r.input_tokens);
    output.push_back(r.output_tokens);
    ttft.push_back(OrNull(r.ttft_ms));
    tpot.push_back(OrNull(r.tpot_ms()));
    itl.push_back(r.itl_ms);
    e2el.push_back(r.e2el_ms);
    status.push_back(r.code);
    messages.push_back(r.message);
    finish.push_back(r.finish_reason.empty() ? json(nullptr) : json(r.finish_reason));
  }
  return {{"scheduled_s", scheduled}, {"sent_s", sent},          {"input_lens", input},
          {"output_lens", output},    {"ttfts_ms", ttft},        {"tpots_ms", tpot},
          {"itls_ms", itl},           {"e2els_ms", e2el},        {"status", status},
          {"messages", messages},     {"finish_reasons", finish}};
}

std::string FormatTable(const Summary& s, absl::string_view title) {
  constexpr int kWidth = 52;
  auto rule = [&](absl::string_view name) {
    const int pad = std::max(0, kWidth - static_cast<int>(name.size()) - 2);
    std::string line(static_cast<size_t>(pad / 2), '=');
    return absl::StrCat(line, " ", name, " ", std::string(static_cast<size_t>(pad - pad / 2), '='),
                        "\n");
  };
  auto row = [](absl::string_view name, const std::string& value) {
    return absl::StrFormat("%-38s %13s\n", name, value);
  };
  auto num = [](double v, int digits) { return absl::StrFormat("%.*f", digits, v); };
  std::string out = rule(title);
  out += row("Successful requests:", absl::StrCat(s.completed));
  out += row("Failed requests:", absl::StrCat(s.failed));
  out += row("Benchmark duration (s):", num(s.duration_s, 2));
  out += row("Total input tokens:", absl::StrCat(s.total_input_tokens));
  out += row("Total generated tokens:", absl::StrCat(s.total_output_tokens));
  out += row("Request throughput (req/s):", num(s.request_throughput, 2));
  if (s.request_goodput) out += row("Request goodput (req/s):", num(*s.request_goodput, 2));
  out += row("Output token throughput (tok/s):", num(s.output_throughput, 1));
  out += row("Total token throughput (tok/s):", num(s.total_token_throughput, 1));
  out += row("Peak output token throughput (tok/s):", num(s.max_output_tokens_per_s, 0));
  out += row("Peak concurrent requests:", absl::StrCat(s.max_concurrent_requests));
  const std::pair<const char*, const Distribution*> metrics[] = {
      {"Time to First Token (TTFT)", &s.ttft_ms},
      {"Time per Output Token (TPOT, excl. 1st)", &s.tpot_ms},
      {"Inter-token Latency (ITL, per token)", &s.itl_ms},
      {"End-to-end Latency (E2EL)", &s.e2el_ms},
  };
  const char* shorts[] = {"TTFT", "TPOT", "ITL", "E2EL"};
  for (int m = 0; m < 4; ++m) {
    const Distribution& d = *metrics[m].second;
    out += rule(metrics[m].first);
    out += row(absl::StrCat("Mean ", shorts[m], " (ms):"), Ms(d, d.mean));
    out += row(absl::StrCat("Median ", shorts[m], " (ms):"), Ms(d, d.median));
    out += row(absl::StrCat("Std ", shorts[m], " (ms):"), Ms(d, d.stddev));
    for (const auto& [p, v] : d.percentiles) {
      out += row(absl::StrCat("P", p, " ", shorts[m], " (ms):"), Ms(d, v));
    }
  }
  if (!s.errors.empty()) {
    out += rule("Errors");
    for (const auto& [code, e] : s.errors) {
      out += absl::StrCat(e.count, " x ", code);
      if (!e.example.empty()) absl::StrAppend(&out, ", e.g. \"", e.example, "\"");
      out += "\n";
    }
  }
  out += std::string(kWidth, '=') + "\n";
  return out;
}

std::string CsvHeader(const std::vector<double>& percentiles) {
  std::vector<std::string> cols = {"parameter",
                                   "value",
                                   "completed",
                                   "failed",
                                   "duration_s",
                                   "request_throughput",
                                   "request_goodput",
                                   "output_throughput",
                                   "total_token_throughput",
                                   "max_concurrent_requests"};
  for (const char* m : {"ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"}) {
    cols.push_back(absl::StrCat(m, "_mean"));
    cols.push_back(absl::StrCat(m, "_median"));
    for (double p : percentiles) cols.push_back(absl::StrCat(m, "_", PercentName(p)));
  }
  return absl::StrJoin(cols, ",");
}

std::string CsvRow(absl::string_view parameter, absl::string_view value, const Summary& s) {
  std::vector<std::string> cells = {
      std::string(parameter),
      std::string(value),
      absl::StrCat(s.completed),
      absl::StrCat(s.failed),
      absl::StrFormat("%.4f", s.duration_s),
      absl::StrFormat("%.4f", s.request_throughput),
      s.request_goodput ? absl::StrFormat("%.4f", *s.request_goodput) : std::string(),
      absl::StrFormat("%.2f", s.output_throughput),
      absl::StrFormat("%.2f", s.total_token_throughput),
      absl::StrCat(s.max_concurrent_requests)};
  for (const Distribution* d : {&s.ttft_ms, &s.tpot_ms, &s.itl_ms, &s.e2el_ms}) {
    auto cell = [&](double v) {
      return d->count == 0 ? std::string() : absl::StrFormat("%.4f", v);
    };
    cells.push_back(cell(d->mean));
    cells.push_back(cell(d->median));
    for (const auto& [p, v] : d->percentiles) cells.push_back(cell(v));
  }
  return absl::StrJoin(cells, ",");
}

}  // namespace bench
}  // namespace memserve
