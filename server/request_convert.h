// Turns API requests (memserve.v1 protos) into engine requests, checking
// every rule of docs/api.md through engine/request/validate.h (the one place
// a request is validated). Errors are InvalidArgument naming the proto
// field by its path ("text", "token_ids[3]", "sampling.top_p",
// "messages[1].role", "request_id") and the limit.
#ifndef MEMSERVE_SERVER_REQUEST_CONVERT_H_
#define MEMSERVE_SERVER_REQUEST_CONVERT_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/request/request.h"
#include "engine/request/validate.h"
#include "engine/tokenizer.h"
#include "memserve/v1/memserve.pb.h"

namespace memserve {

struct ConvertOptions {
  // max_tokens when the request leaves it unset (capped by the context left).
  int default_max_tokens = kDefaultMaxTokens;
  std::string chat_template = "plain";
};

// The EngineRequest for a Generate/Complete call (text encoded with BOS;
// token_ids used as given). request.deadline and request.id are left for
// the caller.
absl::StatusOr<EngineRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                              const Tokenizer& tokenizer, const ModelConfig& config,
                                              const ConvertOptions& options);

// The EngineRequest for a Chat/ChatComplete call: messages rendered with the
// chat template, then as a text prompt.
absl::StatusOr<EngineRequest> ToEngineRequest(const v1::ChatRequest& request,
                                              const Tokenizer& tokenizer, const ModelConfig& config,
                                              const ConvertOptions& options);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_REQUEST_CONVERT_H_
