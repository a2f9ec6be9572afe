// Turns API requests (memserve.v1 protos) into engine requests, checking
// every rule of docs/api.md through engine/request/validate.h (the one place
// a request is validated). Both transports use it: gRPC with the proto
// messages it received, HTTP (server/http/openai.h) with the proto messages
// it builds from an OpenAI-style JSON body. Errors are InvalidArgument naming
// the field as the transport's user spells it (ApiFieldNames: "text",
// "token_ids[3]", "sampling.top_p" for gRPC; "prompt", "top_p" for HTTP;
// "messages[1].role" for both) and the limit.
#ifndef MEMSERVE_SERVER_API_REQUEST_CONVERT_H_
#define MEMSERVE_SERVER_API_REQUEST_CONVERT_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/request/request.h"
#include "engine/tokenizer.h"
#include "memserve/v1/memserve.pb.h"

namespace memserve {

struct ConvertOptions {
  // max_tokens when the request leaves it unset (capped by the context left).
  int default_max_tokens = kDefaultMaxTokens;
  std::string chat_template = "plain";
};

// How a transport names the request's fields in error messages. The
// defaults are the proto's (gRPC).
struct ApiFieldNames {
  std::string text = "text";            // GenerateRequest.text
  std::string token_ids = "token_ids";  // GenerateRequest.token_ids
  std::string input = "input";          // the oneof, when neither is set
  std::string rendered_chat = "messages (rendered)";
  std::string sampling_prefix = "sampling.";  // before every SamplingParams field
  std::string request_id = "request_id";
};

// The field names of the OpenAI-compatible HTTP API: "prompt" for the
// prompt in either form, sampling fields without a prefix.
ApiFieldNames HttpFieldNames();

// The EngineRequest for a Generate/Complete call (text encoded with BOS;
// token_ids used as given). request.deadline and request.id are left for
// the caller.
absl::StatusOr<EngineRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                              const Tokenizer& tokenizer, const ModelConfig& config,
                                              const ConvertOptions& options,
                                              const ApiFieldNames& names = {});

// The EngineRequest for a Chat/ChatComplete call: messages rendered with the
// chat template, then as a text prompt.
absl::StatusOr<EngineRequest> ToEngineRequest(const v1::ChatRequest& request,
                                              const Tokenizer& tokenizer, const ModelConfig& config,
                                              const ConvertOptions& options,
                                              const ApiFieldNames& names = {});

}  // namespace memserve

#endif  // MEMSERVE_SERVER_API_REQUEST_CONVERT_H_
