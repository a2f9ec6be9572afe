// Strict JSON parsing for untrusted files (config.json, safetensors headers):
// no exceptions escape, duplicate object keys and excessive nesting are
// errors, and a parse error says where it happened.
#ifndef MEMSERVE_ENGINE_STRICT_JSON_H_
#define MEMSERVE_ENGINE_STRICT_JSON_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace memserve {

// Parses `text` as one JSON value into `*out`. Rejects (InvalidArgument, with
// a message that does not name the file; callers prefix it):
//   - syntax errors (the message carries nlohmann's byte position),
//   - NUL bytes anywhere in `text` (nlohmann would stop reading there),
//   - a key repeated within one object,
//   - containers nested deeper than `max_depth` (the root is depth 1).
// On error `*out` is left null.
absl::Status ParseStrictJson(absl::string_view text, int max_depth, nlohmann::json* out);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_STRICT_JSON_H_
