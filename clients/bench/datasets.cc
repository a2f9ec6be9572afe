#include "clients/bench/datasets.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace bench {
namespace {

using nlohmann::json;

// The JSON object on each non-blank line, with its line number (from 1).
absl::StatusOr<std::vector<std::pair<int, json>>> JsonLines(absl::string_view content) {
  std::vector<std::pair<int, json>> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_no, " is not a JSON object"));
    }
    out.emplace_back(line_no, std::move(j));
  }
  if (out.empty()) return absl::InvalidArgumentError("no prompts in the file");
  return out;
}

absl::StatusOr<std::string> StringField(const json& j, const char* key, int line_no) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", line_no, " has no string \"", key, "\""));
  }
  return it->get<std::string>();
}

int Uniform(std::mt19937_64& rng, int len, double ratio) {
  const int lo = std::max(1, static_cast<int>(std::floor(len * (1 - ratio))));
  const int hi = std::max(lo, static_cast<int>(std::ceil(len * (1 + ratio))));
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

}  // namespace

absl::StatusOr<std::vector<DatasetEntry>> ParseJsonlDataset(absl::string_view content) {
  absl::StatusOr<std::vector<std::pair<int, json>>> lines = JsonLines(content);
  if (!lines.ok()) return lines.status();
  std::vector<DatasetEntry> entries;
  for (const auto& [line_no, j] : *lines) {
    DatasetEntry e;
    absl::StatusOr<std::string> prompt = StringField(j, "prompt", line_no);
    if (!prompt.ok()) return prompt.status();
    e.prompt = *std::move(prompt);
    if (const auto it = j.find("output_tokens"); it != j.end()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > (1 << 30)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "line ", line_no, ": \"output_tokens\" must be an integer in [1, 1073741824]"));
      }
      e.output_tokens = it->get<int>();
    } else if (const auto answer = j.find("answer"); answer != j.end()) {
      if (!answer->is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line_no, ": \"answer\" must be a string"));
      }
      e.reference_output = answer->get<std::string>();
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::StatusOr<std::vector<DatasetEntry>> ParseDemoFacts(absl::string_view content) {
  absl::StatusOr<std::vector<std::pair<int, json>>> lines = JsonLines(content);
  if (!lines.ok()) return lines.status();
  std::vector<DatasetEntry> entries;
  for (const auto& [line_no, j] : *lines) {
    DatasetEntry e;
    absl::StatusOr<std::string> prompt = StringField(j, "prompt", line_no);
    if (!prompt.ok()) return prompt.status();
    absl::StatusOr<std::string> answer = StringField(j, "answer", line_no);
    if (!answer.ok()) return answer.status();
    e.prompt = *std::move(prompt);
    e.reference_output = *std::move(answer);
    e.extra_output_tokens = 1;  // the EOS after the answer
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::StatusOr<std::vector<DatasetEntry>> ParseShareGptDataset(absl::string_view content) {
  const json j = json::parse(content, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) {
    return absl::InvalidArgumentError("not a JSON array (a ShareGPT file is one)");
  }
  std::vector<DatasetEntry> entries;
  for (size_t i = 0; i < j.size(); ++i) {
    const json& item = j[i];
    const auto conv = item.is_object() ? item.find("conversations") : item.end();
    if (!item.is_object() || conv == item.end() || !conv->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("element ", i, " has no \"conversations\" array"));
    }
    // The first user turn and the turn after it; conversations without one
    // are skipped, as every ShareGPT benchmark does.
    for (size_t t = 0; t + 1 < conv->size(); ++t) {
      const json& turn = (*conv)[t];
      const json& next = (*conv)[t + 1];
      if (!turn.is_object() || !next.is_object()) break;
      const std::string from = turn.value("from", "");
      if (from != "human" && from != "user") continue;
      const auto prompt = turn.find("value");
      const auto reply = next.find("value");
      if (prompt != turn.end() && prompt->is_string() && !prompt->get<std::string>().empty() &&
          reply != next.end() && reply->is_string() && !reply->get<std::string>().empty()) {
        DatasetEntry e;
        e.prompt = prompt->get<std::string>();
        e.reference_output = reply->get<std::string>();
        entries.push_back(std::move(e));
      }
      break;
    }
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(
        "no conversation with a user turn followed by a reply in the file");
  }
  return entries;
}

std::vector<DatasetEntry> MakeRandomDataset(const RandomDatasetOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::vector<int32_t> ids;  // the vocabulary without BOS and EOS
  for (int32_t id = 0; id < o.vocab_size; ++id) {
    if (id != o.bos_id && id != o.eos_id) ids.push_back(id);
  }
  std::uniform_int_distribution<size_t> pick(0, ids.size() - 1);
  std::vector<DatasetEntry> entries(static_cast<size_t>(o.count));
  for (DatasetEntry& e : entries) {
    const int in = Uniform(rng, o.input_len, o.range_ratio);
    e.output_tokens = Uniform(rng, o.output_len, o.range_ratio);
    if (o.bos_id >= 0) e.prompt_ids.push_back(o.bos_id);
    while (static_cast<int>(e.prompt_ids.size()) < in) e.prompt_ids.push_back(ids[pick(rng)]);
  }
  return entries;
}

absl::StatusOr<std::vector<BenchRequest>> PrepareRequests(const std::vector<DatasetEntry>& entries,
                                                          const PrepareOptions& o,
                                                          const TokenCounter& count_tokens,
                                                          PrepareReport* report) {
  *report = PrepareReport();
  struct Fitted {
    bool fits = false;
    bool clipped = false;
    BenchRequest request;
  };
  std::vector<std::optional<Fitted>> fitted(entries.size());  // each entry fitted once
  std::mt19937_64 rng(o.seed);
  std::vector<size_t> order(entries.size());
  size_t next = order.size();
  std::vector<BenchRequest> out;
  int64_t misses_in_a_row = 0;
  while (static_cast<int64_t>(out.size()) < o.num_prompts) {
    if (next == order.size()) {
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      next = 0;
    }
    const size_t i = order[next++];
    if (!fitted[i]) {
      const DatasetEntry& e = entries[i];
      Fitted f;
      BenchRequest& r = f.request;
      r.prompt = e.prompt;
      r.prompt_ids = e.prompt_ids;
      if (!e.prompt_ids.empty()) {
        r.prompt_tokens = static_cast<int>(e.prompt_ids.size());
      } else {
        absl::StatusOr<int> n = count_tokens(e.prompt, /*add_bos=*/true);
        if (!n.ok()) return n.status();
        r.prompt_tokens = *n;
      }
      if (o.output_len) {
        r.max_tokens = *o.output_len;
      } else if (e.output_tokens) {
        r.max_tokens = *e.output_tokens;
      } else if (e.reference_output) {
        absl::StatusOr<int> n = count_tokens(*e.reference_output, /*add_bos=*/false);
        if (!n.ok()) return n.status();
        r.max_tokens = std::max(1, *n + e.extra_output_tokens);
      }
      const int room = o.max_seqlen - r.prompt_tokens;
      f.fits = room >= 1;
      if (f.fits && r.max_tokens && *r.max_tokens > room) {
        r.max_tokens = room;
        f.clipped = true;
      }
      fitted[i] = std::move(f);
    }
    const Fitted& f = *fitted[i];
    if (!f.fits) {
      ++report->skipped;
      // Two passes hold a whole shuffled pass: then nothing fits.
      if (++misses_in_a_row >= 2 * static_cast<int64_t>(entries.size())) {
        return absl::InvalidArgumentError(
            absl::StrCat("no prompt of the dataset leaves room to generate in the model's "
                         "context (max_seqlen ",
                         o.max_seqlen, " tokens)"));
      }
      continue;
    }
    misses_in_a_row = 0;
    if (f.clipped) ++report->clipped;
    out.push_back(f.request);
  }
  return out;
}

}  // namespace bench
}  // namespace memserve
