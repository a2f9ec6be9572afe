#include "server/http/openai.h"

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "engine/strict_json.h"
#include "server/api/errors.h"

namespace memserve {
namespace {

using nlohmann::json;

// Request bodies nest at most: body, messages, a message, its content
// parts, a part.
constexpr int kMaxJsonDepth = 8;

// The request fields of each endpoint.
constexpr const char* kCommonFields[] = {"model",
                                         "max_tokens",
                                         "temperature",
                                         "top_p",
                                         "top_k",
                                         "min_p",
                                         "seed",
                                         "stop",
                                         "stop_token_ids",
                                         "presence_penalty",
                                         "frequency_penalty",
                                         "repetition_penalty",
                                         "min_tokens",
                                         "ignore_eos",
                                         "include_stop_str_in_output",
                                         "n",
                                         "logprobs",
                                         "logit_bias",
                                         "stream",
                                         "stream_options",
                                         "user"};
constexpr const char* kCompletionOnlyFields[] = {"prompt", "best_of", "echo", "suffix"};
constexpr const char* kChatOnlyFields[] = {"messages",
                                           "max_completion_tokens",
                                           "top_logprobs",
                                           "response_format",
                                           "tools",
                                           "tool_choice",
                                           "functions",
                                           "function_call",
                                           "parallel_tool_calls"};
// Request headers that errors can name.
constexpr const char* kHeaders[] = {"X-Request-Id", "X-Request-Timeout-Ms"};

const std::set<std::string>& FieldsOf(Endpoint endpoint) {
  static const auto* const kCompletion = [] {
    auto* fields = new std::set<std::string>(std::begin(kCommonFields), std::end(kCommonFields));
    fields->insert(std::begin(kCompletionOnlyFields), std::end(kCompletionOnlyFields));
    return fields;
  }();
  static const auto* const kChat = [] {
    auto* fields = new std::set<std::string>(std::begin(kCommonFields), std::end(kCommonFields));
    fields->insert(std::begin(kChatOnlyFields), std::end(kChatOnlyFields));
    return fields;
  }();
  return endpoint == Endpoint::kCompletions ? *kCompletion : *kChat;
}

// Whether `name` is a field of either endpoint or a request header (for
// `param` in errors).
bool IsRequestField(const std::string& name) {
  for (const char* header : kHeaders) {
    if (name == header) return true;
  }
  return FieldsOf(Endpoint::kCompletions).count(name) > 0 ||
         FieldsOf(Endpoint::kChatCompletions).count(name) > 0;
}

const char* TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    case json::value_t::number_float:
      return "a non-integer number";
    default:
      return "a number";
  }
}

absl::Status TypeError(absl::string_view field, absl::string_view expected, const json& v) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " must be ", expected, ", got ", TypeName(v)));
}

absl::StatusOr<double> Number(const json& v, absl::string_view field) {
  if (!v.is_number()) return TypeError(field, "a number", v);
  return v.get<double>();
}

absl::StatusOr<int64_t> Integer(const json& v, absl::string_view field) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(field, " is out of range, got ", u));
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::nearbyint(d) == d && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  return TypeError(field, "an integer", v);
}

absl::StatusOr<int32_t> Int32(const json& v, absl::string_view field) {
  ASSIGN_OR_RETURN(const int64_t i, Integer(v, field));
  if (i < std::numeric_limits<int32_t>::min() || i > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is out of range, got ", i));
  }
  return static_cast<int32_t>(i);
}

absl::StatusOr<bool> Bool(const json& v, absl::string_view field) {
  if (!v.is_boolean()) return TypeError(field, "true or false", v);
  return v.get<bool>();
}

absl::StatusOr<std::string> String(const json& v, absl::string_view field) {
  if (!v.is_string()) return TypeError(field, "a string", v);
  return v.get<std::string>();
}

// `body[key]` unless absent or null.
const json* Field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status Unsupported(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

absl::Status ParseSampling(Endpoint endpoint, const json& body, v1::SamplingParams* s,
                           OpenAiRequest* out) {
  const bool chat = endpoint == Endpoint::kChatCompletions;
  if (const json* v = Field(body, "max_tokens")) {
    ASSIGN_OR_RETURN(const int32_t n, Int32(*v, "max_tokens"));
    s->set_max_tokens(n);
  }
  if (chat) {
    if (const json* v = Field(body, "max_completion_tokens")) {
      ASSIGN_OR_RETURN(const int32_t n, Int32(*v, "max_completion_tokens"));
      s->set_max_tokens(n);
    }
  }
  if (const json* v = Field(body, "temperature")) {
    ASSIGN_OR_RETURN(const double x, Number(*v, "temperature"));
    s->set_temperature(static_cast<float>(x));
  }
  if (const json* v = Field(body, "top_p")) {
    ASSIGN_OR_RETURN(const double x, Number(*v, "top_p"));
    s->set_top_p(static_cast<float>(x));
  }
  if (const json* v = Field(body, "top_k")) {
    ASSIGN_OR_RETURN(const int32_t k, Int32(*v, "top_k"));
    s->set_top_k(k == -1 ? 0 : k);
  }
  if (const json* v = Field(body, "min_p")) {
    ASSIGN_OR_RETURN(const double x, Number(*v, "min_p"));
    s->set_min_p(static_cast<float>(x));
  }
  if (const json* v = Field(body, "repetition_penalty")) {
    ASSIGN_OR_RETURN(const double x, Number(*v, "repetition_penalty"));
    s->set_repetition_penalty(static_cast<float>(x));
  }
  if (const json* v = Field(body, "frequency_penalty")) {
    ASSIGN_OR_RETURN(const double x, Number(*v, "frequency_penalty"));
    s->set_frequency_penalty(static_cast<float>(x));
  }
  if (const json* v = Field(body, "presence_penalty")) {
    ASSIGN_OR_RETURN(const double x, Number(*v, "presence_penalty"));
    s->set_presence_penalty(static_cast<float>(x));
  }
  if (const json* v = Field(body, "seed")) {
    ASSIGN_OR_RETURN(const int64_t seed, Integer(*v, "seed"));
    if (seed < 0) {
      return absl::InvalidArgumentError(absl::StrCat("seed must be >= 0, got ", seed));
    }
    s->set_seed(static_cast<uint64_t>(seed));
  }
  if (const json* v = Field(body, "min_tokens")) {
    ASSIGN_OR_RETURN(const int32_t n, Int32(*v, "min_tokens"));
    s->set_min_tokens(n);
  }
  if (const json* v = Field(body, "ignore_eos")) {
    ASSIGN_OR_RETURN(const bool b, Bool(*v, "ignore_eos"));
    s->set_ignore_eos(b);
  }
  if (const json* v = Field(body, "include_stop_str_in_output")) {
    ASSIGN_OR_RETURN(const bool b, Bool(*v, "include_stop_str_in_output"));
    s->set_include_stop_str(b);
  }
  if (const json* v = Field(body, "stop")) {
    if (v->is_string()) {
      s->add_stop(v->get<std::string>());
    } else if (v->is_array()) {
      for (size_t i = 0; i < v->size(); ++i) {
        ASSIGN_OR_RETURN(std::string stop, String((*v)[i], absl::StrCat("stop[", i, "]")));
        s->add_stop(std::move(stop));
      }
    } else {
      return TypeError("stop", "a string or an array of strings", *v);
    }
  }
  if (const json* v = Field(body, "stop_token_ids")) {
    if (!v->is_array()) return TypeError("stop_token_ids", "an array of integers", *v);
    for (size_t i = 0; i < v->size(); ++i) {
      ASSIGN_OR_RETURN(const int32_t id, Int32((*v)[i], absl::StrCat("stop_token_ids[", i, "]")));
      s->add_stop_token_ids(id);
    }
  }
  if (const json* v = Field(body, "logprobs")) {
    if (chat) {
      ASSIGN_OR_RETURN(out->logprobs, Bool(*v, "logprobs"));
    } else {
      ASSIGN_OR_RETURN(const int32_t n, Int32(*v, "logprobs"));
      s->set_logprobs(n);
      out->logprobs = true;
    }
  }
  if (chat) {
    if (const json* v = Field(body, "top_logprobs")) {
      ASSIGN_OR_RETURN(const int32_t n, Int32(*v, "top_logprobs"));
      if (n != 0 && !out->logprobs) {
        return absl::InvalidArgumentError("top_logprobs requires logprobs to be true");
      }
      s->set_logprobs(n);
    }
  }
  return absl::OkStatus();
}

// The fields that are accepted but change nothing, or accepted only with
// the value that changes nothing.
absl::Status CheckNoOps(Endpoint endpoint, const json& body) {
  if (const json* v = Field(body, "n")) {
    ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "n"));
    if (n != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("n must be 1 (one choice per request), got ", n));
    }
  }
  if (const json* v = Field(body, "user")) RETURN_IF_ERROR(String(*v, "user").status());
  if (const json* v = Field(body, "logit_bias")) {
    if (!v->is_object()) return TypeError("logit_bias", "an object", *v);
    if (!v->empty()) return Unsupported("logit_bias", "not supported by this server");
  }
  if (endpoint == Endpoint::kCompletions) {
    if (const json* v = Field(body, "best_of")) {
      ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "best_of"));
      if (n != 1) return absl::InvalidArgumentError(absl::StrCat("best_of must be 1, got ", n));
    }
    if (const json* v = Field(body, "echo")) {
      ASSIGN_OR_RETURN(const bool echo, Bool(*v, "echo"));
      if (echo) return Unsupported("echo", "true is not supported by this server");
    }
    if (const json* v = Field(body, "suffix")) {
      ASSIGN_OR_RETURN(const std::string suffix, String(*v, "suffix"));
      if (!suffix.empty()) return Unsupported("suffix", "not supported by this server");
    }
    return absl::OkStatus();
  }
  if (const json* v = Field(body, "response_format")) {
    if (!v->is_object()) return TypeError("response_format", "an object", *v);
    const json* type = Field(*v, "type");
    if (type == nullptr || !type->is_string() || type->get<std::string>() != "text" ||
        v->size() != 1) {
      return Unsupported("response_format", "only {\"type\": \"text\"} is supported");
    }
  }
  for (const char* key : {"tools", "functions"}) {
    if (const json* v = Field(body, key)) {
      if (!v->is_array()) return TypeError(key, "an array", *v);
      if (!v->empty()) return Unsupported(key, "tool calls are not supported by this server");
    }
  }
  if (const json* v = Field(body, "tool_choice")) {
    if (!v->is_string() || v->get<std::string>() != "none") {
      return Unsupported("tool_choice", "only \"none\" is supported");
    }
  }
  if (const json* v = Field(body, "function_call")) {
    if (!v->is_string() || v->get<std::string>() != "none") {
      return Unsupported("function_call", "only \"none\" is supported");
    }
  }
  if (const json* v = Field(body, "parallel_tool_calls")) {
    RETURN_IF_ERROR(Bool(*v, "parallel_tool_calls").status());
  }
  return absl::OkStatus();
}

absl::Status ParsePrompt(const json& body, v1::GenerateRequest* out) {
  const json* v = Field(body, "prompt");
  if (v == nullptr) return absl::InvalidArgumentError("prompt is required");
  constexpr char kShape[] = "a string, an array of token ids, or a one-element array of either";
  if (v->is_string()) {
    out->set_text(v->get<std::string>());
    return absl::OkStatus();
  }
  if (!v->is_array()) return TypeError("prompt", kShape, *v);
  if (v->empty()) {
    return absl::InvalidArgumentError("prompt is empty (at least 1 token is required)");
  }
  const json& first = (*v)[0];
  if (first.is_string() || first.is_array()) {
    if (v->size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt holds ", v->size(), " prompts; this server takes one prompt per request"));
    }
    if (first.is_string()) {
      out->set_text(first.get<std::string>());
      return absl::OkStatus();
    }
    return ParsePrompt(json{{"prompt", first}}, out);
  }
  v1::TokenIds* ids = out->mutable_token_ids();
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_number()) return TypeError("prompt", kShape, *v);
    ASSIGN_OR_RETURN(const int32_t id, Int32((*v)[i], absl::StrCat("prompt[", i, "]")));
    ids->add_ids(id);
  }
  return absl::OkStatus();
}

absl::Status ParseMessages(const json& body, v1::ChatRequest* out) {
  const json* v = Field(body, "messages");
  if (v == nullptr) return absl::InvalidArgumentError("messages is required");
  if (!v->is_array()) return TypeError("messages", "an array", *v);
  for (size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string name = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return TypeError(name, "an object", m);
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (it.key() != "role" && it.key() != "content" && it.key() != "name") {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ".", it.key(),
                         ": unrecognized field (supported: role, content, "
                         "name)"));
      }
    }
    v1::ChatMessage* message = out->add_messages();
    const json* role = Field(m, "role");
    if (role == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ".role is required"));
    ASSIGN_OR_RETURN(std::string r, String(*role, absl::StrCat(name, ".role")));
    message->set_role(r == "developer" ? "system" : r);
    if (const json* name_field = Field(m, "name")) {
      RETURN_IF_ERROR(String(*name_field, absl::StrCat(name, ".name")).status());
    }
    const json* content = Field(m, "content");
    if (content == nullptr) continue;
    if (content->is_string()) {
      message->set_content(content->get<std::string>());
      continue;
    }
    if (!content->is_array()) {
      return TypeError(absl::StrCat(name, ".content"), "a string or an array of text parts",
                       *content);
    }
    std::string text;
    for (size_t j = 0; j < content->size(); ++j) {
      const json& part = (*content)[j];
      const std::string part_name = absl::StrCat(name, ".content[", j, "]");
      if (!part.is_object()) return TypeError(part_name, "an object", part);
      const json* type = Field(part, "type");
      if (type == nullptr || !type->is_string() || type->get<std::string>() != "text") {
        return absl::InvalidArgumentError(
            absl::StrCat(part_name, ".type must be \"text\" (the only part this server takes)"));
      }
      const json* part_text = Field(part, "text");
      if (part_text == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(part_name, ".text is required"));
      }
      ASSIGN_OR_RETURN(std::string t, String(*part_text, absl::StrCat(part_name, ".text")));
      text += t;
    }
    message->set_content(std::move(text));
  }
  return absl::OkStatus();
}

const char* FinishReasonText(FinishReason r) {
  return r == FinishReason::kLength ? "length" : "stop";
}

json StopReason(const GenerateResult& result) {
  if (result.finish_reason != FinishReason::kStop) return nullptr;
  if (result.stop_token_id >= 0) return result.stop_token_id;
  return result.stop_string;
}

json ByteArray(const std::string& bytes) {
  json out = json::array();
  for (const char c : bytes) out.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return out;
}

// Characters in `s` (UTF-8 lead bytes; an invalid byte counts as one, as
// it becomes one U+FFFD).
int CountChars(const std::string& s) {
  int n = 0;
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::string Event(const json& data) { return absl::StrCat("data: ", DumpJson(data), "\n\n"); }

constexpr char kDone[] = "data: [DONE]\n\n";

}  // namespace

const char* EndpointPath(Endpoint endpoint) {
  return endpoint == Endpoint::kCompletions ? "/v1/completions" : "/v1/chat/completions";
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(Endpoint endpoint, absl::string_view body) {
  json root;
  if (absl::Status s = ParseStrictJson(body, kMaxJsonDepth, &root); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body is not valid JSON: ", s.message()));
  }
  if (!root.is_object()) return TypeError("the request body", "a JSON object", root);
  const bool chat = endpoint == Endpoint::kChatCompletions;
  const std::set<std::string>& known = FieldsOf(endpoint);
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (known.count(it.key()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(it.key(), ": unrecognized request field for ", EndpointPath(endpoint)));
    }
  }
  OpenAiRequest out;
  out.endpoint = endpoint;
  if (const json* v = Field(root, "model")) {
    ASSIGN_OR_RETURN(out.model, String(*v, "model"));
  }
  if (const json* v = Field(root, "stream")) {
    ASSIGN_OR_RETURN(out.stream, Bool(*v, "stream"));
  }
  if (const json* v = Field(root, "stream_options")) {
    if (!out.stream) {
      return absl::InvalidArgumentError("stream_options is only allowed when stream is true");
    }
    if (!v->is_object()) return TypeError("stream_options", "an object", *v);
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (it.key() == "include_usage") {
        if (!it->is_null()) {
          ASSIGN_OR_RETURN(out.include_usage, Bool(*it, "stream_options.include_usage"));
        }
      } else if (it.key() != "continuous_usage_stats") {
        return absl::InvalidArgumentError(
            absl::StrCat("stream_options.", it.key(), ": unrecognized field"));
      }
    }
  }
  RETURN_IF_ERROR(CheckNoOps(endpoint, root));
  if (chat) {
    RETURN_IF_ERROR(ParseMessages(root, &out.chat));
    RETURN_IF_ERROR(ParseSampling(endpoint, root, out.chat.mutable_sampling(), &out));
  } else {
    RETURN_IF_ERROR(ParsePrompt(root, &out.generate));
    RETURN_IF_ERROR(ParseSampling(endpoint, root, out.generate.mutable_sampling(), &out));
  }
  return out;
}

absl::Status RenameFields(Endpoint endpoint, const absl::Status& status) {
  if (endpoint != Endpoint::kChatCompletions || status.ok()) return status;
  if (absl::StartsWith(status.message(), "logprobs ")) {
    return absl::Status(status.code(), absl::StrCat("top_", status.message()));
  }
  return status;
}

std::string ErrorBody(const absl::Status& status, const char* code) {
  const std::string message(status.message());
  // The leading field path: up to the first space or ':'.
  const size_t end = message.find_first_of(" :");
  const std::string path = message.substr(0, end);
  const std::string root = path.substr(0, path.find_first_of(".["));
  json param = nullptr;
  if (!path.empty() && IsRequestField(root)) param = path;
  json error = {{"message", message},
                {"type", ToHttpError(status.code()).type},
                {"param", param},
                {"code", code == nullptr ? json(nullptr) : json(code)}};
  return DumpJson(json{{"error", error}});
}

std::string ErrorEvents(const absl::Status& status) {
  return absl::StrCat("data: ", ErrorBody(status), "\n\n", kDone);
}

OpenAiResponse::OpenAiResponse(const OpenAiRequest& request, const std::string& request_id,
                               int64_t created, std::string model, const Tokenizer* tokenizer)
    : endpoint_(request.endpoint),
      include_usage_(request.include_usage),
      logprobs_(request.logprobs),
      id_(absl::StrCat(request.endpoint == Endpoint::kCompletions ? "cmpl-" : "chatcmpl-",
                       request_id)),
      created_(created),
      model_(std::move(model)),
      tokenizer_(tokenizer) {}

json OpenAiResponse::Chunk() const {
  json chunk = {
      {"id", id_},
      {"object", endpoint_ == Endpoint::kCompletions ? "text_completion" : "chat.completion.chunk"},
      {"created", created_},
      {"model", model_}};
  if (include_usage_) chunk["usage"] = nullptr;
  return chunk;
}

json OpenAiResponse::TokenLogprobs(const TokenEvent& token, int text_offset) const {
  const std::string bytes = tokenizer_->TokenBytes(token.id);
  if (endpoint_ == Endpoint::kCompletions) {
    // The legacy completions format, one position.
    json top = json::object();
    for (const TokenLogprob& t : token.top) top[tokenizer_->TokenBytes(t.id)] = t.logprob;
    return {{"token", bytes}, {"logprob", token.logprob}, {"top", top}, {"offset", text_offset}};
  }
  json top = json::array();
  for (const TokenLogprob& t : token.top) {
    const std::string b = tokenizer_->TokenBytes(t.id);
    top.push_back({{"token", b}, {"logprob", t.logprob}, {"bytes", ByteArray(b)}});
  }
  return {{"token", bytes},
          {"logprob", token.logprob},
          {"bytes", ByteArray(bytes)},
          {"top_logprobs", top}};
}

namespace {

// Completions' logprobs object over per-token entries of TokenLogprobs.
json CompletionLogprobs(const std::vector<json>& entries) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const json& e : entries) {
    tokens.push_back(e["token"]);
    token_logprobs.push_back(e["logprob"]);
    top.push_back(e["top"]);
    offsets.push_back(e["offset"]);
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

}  // namespace

json OpenAiResponse::Usage(const GenerateResult& result) const {
  return {{"prompt_tokens", result.prompt_tokens},
          {"completion_tokens", result.completion_tokens},
          {"total_tokens", result.prompt_tokens + result.completion_tokens}};
}

std::string OpenAiResponse::TokenChunk(const TokenEvent& token) {
  json chunk = Chunk();
  json choice = {{"index", 0}};
  json logprobs = nullptr;
  if (logprobs_) {
    json entry = TokenLogprobs(token, text_offset_);
    text_offset_ += CountChars(tokenizer_->TokenBytes(token.id));
    logprobs = endpoint_ == Endpoint::kCompletions ? CompletionLogprobs({entry})
                                                   : json{{"content", json::array({entry})}};
  }
  if (endpoint_ == Endpoint::kCompletions) {
    choice["text"] = token.text;
  } else {
    json delta = json::object();
    if (first_chunk_) delta["role"] = "assistant";
    delta["content"] = token.text;
    choice["delta"] = delta;
  }
  first_chunk_ = false;
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = nullptr;
  chunk["choices"] = json::array({choice});
  return Event(chunk);
}

std::string OpenAiResponse::FinalChunks(const GenerateResult& result) {
  json chunk = Chunk();
  json choice = {{"index", 0}};
  if (endpoint_ == Endpoint::kCompletions) {
    choice["text"] = result.trailing_text;
  } else {
    json delta = json::object();
    if (first_chunk_) delta["role"] = "assistant";
    if (!result.trailing_text.empty() || first_chunk_) delta["content"] = result.trailing_text;
    choice["delta"] = delta;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = FinishReasonText(result.finish_reason);
  choice["stop_reason"] = StopReason(result);
  chunk["choices"] = json::array({choice});
  std::string out = Event(chunk);
  if (include_usage_) {
    json usage = Chunk();
    usage["choices"] = json::array();
    usage["usage"] = Usage(result);
    out += Event(usage);
  }
  out += kDone;
  return out;
}

void OpenAiResponse::Add(const TokenEvent& token) {
  text_ += token.text;
  if (!logprobs_) return;
  entries_.push_back(TokenLogprobs(token, text_offset_));
  text_offset_ += CountChars(tokenizer_->TokenBytes(token.id));
}

std::string OpenAiResponse::Body(const GenerateResult& result) const {
  json choice = {{"index", 0}};
  json logprobs = nullptr;
  if (logprobs_) {
    logprobs = endpoint_ == Endpoint::kCompletions ? CompletionLogprobs(entries_)
                                                   : json{{"content", entries_}};
  }
  if (endpoint_ == Endpoint::kCompletions) {
    choice["text"] = result.text;
  } else {
    choice["message"] = {{"role", "assistant"}, {"content", result.text}};
  }
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = FinishReasonText(result.finish_reason);
  choice["stop_reason"] = StopReason(result);
  json body = {
      {"id", id_},
      {"object", endpoint_ == Endpoint::kCompletions ? "text_completion" : "chat.completion"},
      {"created", created_},
      {"model", model_},
      {"choices", json::array({choice})},
      {"usage", Usage(result)}};
  return DumpJson(body);
}

}  // namespace memserve
