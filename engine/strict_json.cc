#include "engine/strict_json.h"

#include <cstddef>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace memserve {
namespace {

using json = nlohmann::json;

// Forwards every event to nlohmann's DOM builder, after checking depth and
// duplicate keys. Returning false from an event stops the parser.
class StrictSax {
 public:
  StrictSax(json* root, int max_depth)
      : dom_(*root, /*allow_exceptions=*/false), max_depth_(max_depth) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) {
    return dom_.number_float(v, s);
  }
  bool string(json::string_t& v) { return dom_.string(v); }
  bool binary(json::binary_t& v) { return dom_.binary(v); }

  bool start_object(std::size_t n) {
    if (!Push()) return false;
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    // The innermost open container is an object (the parser guarantees it).
    if (!stack_.back().keys.insert(k).second) {
      error_ = absl::StrCat("duplicate key \"", absl::CHexEscape(k), "\"");
      return false;
    }
    return dom_.key(k);
  }
  bool end_object() {
    stack_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    if (!Push()) return false;
    return dom_.start_array(n);
  }
  bool end_array() {
    stack_.pop_back();
    return dom_.end_array();
  }
  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) {
    error_ = ex.what();  // nlohmann's message has line and column
    if (error_.empty()) error_ = absl::StrCat("syntax error at byte ", position);
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  // One entry per open container; arrays simply never use their key set.
  struct Container {
    std::unordered_set<std::string> keys;
  };

  bool Push() {
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      error_ = absl::StrCat("JSON nested deeper than ", max_depth_, " levels");
      return false;
    }
    stack_.push_back(Container{});
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  const int max_depth_;
  std::vector<Container> stack_;
  std::string error_;
};

}  // namespace

absl::Status ParseStrictJson(absl::string_view text, int max_depth, json* out) {
  *out = json();
  const size_t nul = text.find('\0');
  if (nul != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("NUL byte at offset ", nul, " in JSON text"));
  }
  json root;
  StrictSax sax(&root, max_depth);
  bool ok = false;
  // nlohmann may still throw on allocation failure; nothing else here throws
  // with allow_exceptions=false, but never let an exception escape.
  try {
    ok = json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("JSON parse failed: ", e.what()));
  }
  if (!ok) {
    return absl::InvalidArgumentError(sax.error().empty() ? std::string("invalid JSON")
                                                          : sax.error());
  }
  *out = std::move(root);
  return absl::OkStatus();
}

}  // namespace memserve
