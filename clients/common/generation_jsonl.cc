#include "clients/common/generation_jsonl.h"

#include "nlohmann/json.hpp"

namespace memserve {
namespace jsonl {
namespace {

// Invalid UTF-8 becomes U+FFFD instead of an exception.
std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string FormatToken(const TokenLine& token) {
  nlohmann::json top = nlohmann::json::array();
  for (const TopEntry& t : token.top) {
    top.push_back({{"id", t.id}, {"logprob", t.logprob}, {"text", t.text}});
  }
  return Dump({{"id", token.id}, {"text", token.text}, {"logprob", token.logprob}, {"top", top}});
}

std::string FormatFinal(const FinalLine& f) {
  nlohmann::json j = {
      {"finish_reason", f.finish_reason},
      {"text", f.text},
      {"usage", {{"prompt_tokens", f.prompt_tokens}, {"completion_tokens", f.completion_tokens}}},
  };
  if (f.stop_string) j["stop_string"] = *f.stop_string;
  if (f.stop_token_id) j["stop_token_id"] = *f.stop_token_id;
  return Dump(j);
}

}  // namespace jsonl
}  // namespace memserve
