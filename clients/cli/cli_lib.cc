#include "clients/cli/cli_lib.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "grpc/support/log.h"
#include "grpcpp/support/client_interceptor.h"
#include "memserve/v1/memserve.grpc.pb.h"

namespace memserve {
namespace cli {

namespace {

constexpr absl::string_view kCodeNames[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

std::chrono::system_clock::time_point DeadlineAfter(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(d);
}

// Strings print as they are (JSON-safe callers escape them); bytes escaped.
std::string ScalarToString(const google::protobuf::Message& m,
                           const google::protobuf::FieldDescriptor* f, int index) {
  using FD = google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FD::CPPTYPE_INT32:
      return absl::StrCat(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case FD::CPPTYPE_INT64:
      return absl::StrCat(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case FD::CPPTYPE_UINT32:
      return absl::StrCat(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case FD::CPPTYPE_UINT64:
      return absl::StrCat(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case FD::CPPTYPE_FLOAT:
      return absl::StrCat(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FD::CPPTYPE_DOUBLE:
      return absl::StrCat(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case FD::CPPTYPE_BOOL:
      return (rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false";
    case FD::CPPTYPE_ENUM: {
      const google::protobuf::EnumValueDescriptor* v =
          rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f);
      return v->name();
    }
    case FD::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      return f->type() == FD::TYPE_BYTES ? EscapeBytes(s) : s;
    }
    case FD::CPPTYPE_MESSAGE:
      break;
  }
  return "";
}

void Flatten(const google::protobuf::Message& m, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>* out) {
  const google::protobuf::Descriptor* d = m.GetDescriptor();
  const google::protobuf::Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    const std::string name = prefix + f->name();
    const bool is_message = f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE;
    if (f->is_repeated()) {
      const int n = r->FieldSize(m, f);
      if (is_message) {
        if (n == 0) out->emplace_back(name, "");
        for (int j = 0; j < n; ++j) {
          Flatten(r->GetRepeatedMessage(m, f, j), absl::StrCat(name, "[", j, "]."), out);
        }
      } else {
        std::vector<std::string> items;
        for (int j = 0; j < n; ++j) items.push_back(ScalarToString(m, f, j));
        out->emplace_back(name, absl::StrJoin(items, ", "));
      }
      continue;
    }
    if (is_message) {
      Flatten(r->GetMessage(m, f), name + ".", out);
      continue;
    }
    if (f->has_presence() && !r->HasField(m, f)) {
      // A oneof member that is not the chosen one says nothing; an unset
      // `optional` field is worth showing as such.
      if (f->real_containing_oneof() == nullptr) out->emplace_back(name, "(unset)");
      continue;
    }
    out->emplace_back(name, ScalarToString(m, f, -1));
  }
}

// While ParseCommandLineWithExitCodes parses: the code to exit with if absl
// ends the process; -1 otherwise.
int g_exit_code_during_parse = -1;

void ExitDuringParse() {
  if (g_exit_code_during_parse < 0) return;
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  _exit(g_exit_code_during_parse);
}

bool AsksForHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view a = argv[i];
    if (a == "--") break;
    for (const absl::string_view flag :
         {"help", "helpfull", "helpshort", "helppackage", "version", "only_check_args"}) {
      if (a == absl::StrCat("--", flag) || a == absl::StrCat("-", flag) ||
          absl::StartsWith(a, absl::StrCat("--", flag, "=")) ||
          absl::StartsWith(a, absl::StrCat("-", flag, "="))) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace

std::vector<char*> ParseCommandLineWithExitCodes(int argc, char** argv, absl::string_view flags_dir,
                                                 const char* usage) {
  absl::FlagsUsageConfig config;
  const std::string dir(flags_dir);
  config.contains_help_flags = [dir](absl::string_view file) {
    return absl::StrContains(file, dir);
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  g_exit_code_during_parse = AsksForHelp(argc, argv) ? kExitOk : kExitUsage;
  std::atexit(ExitDuringParse);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  g_exit_code_during_parse = -1;
  return rest;
}

std::string StatusCodeName(grpc::StatusCode code) {
  const int i = static_cast<int>(code);
  if (i >= 0 && i < static_cast<int>(std::size(kCodeNames))) return std::string(kCodeNames[i]);
  return absl::StrCat("CODE_", i);
}

int ExitCodeFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return kExitUsage;
    case grpc::StatusCode::UNAVAILABLE:
      return kExitUnreachable;
    default:
      return kExitOther;
  }
}

std::string FormatStatus(const grpc::Status& status) {
  std::string out = StatusCodeName(status.error_code());
  if (!status.error_message().empty()) absl::StrAppend(&out, ": ", status.error_message());
  return out;
}

namespace {

// Adds `authorization: Bearer <key>` to every call of a channel.
class ApiKeyInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ApiKeyInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* const header_;
};

class ApiKeyInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ApiKeyInterceptorFactory(const std::string& key) : header_("Bearer " + key) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    (void)info;
    return new ApiKeyInterceptor(&header_);
  }

 private:
  const std::string header_;  // lives as long as the channel (which owns the factory)
};

// The contents of `path`, given as `flag`; NotFound naming both when it
// cannot be read.
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

std::string ApiKeyFromFlagOrEnv(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  const char* env = std::getenv("MEMSERVE_API_KEY");
  return env == nullptr ? "" : std::string(env);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const ClientTlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert and --tls_key go together: give both or neither (got only ",
                     files.cert.empty() ? "--tls_key" : "--tls_cert", ")"));
  }
  if (files.ca.empty()) {
    if (!files.cert.empty()) {
      return absl::InvalidArgumentError("--tls_cert and --tls_key require --tls_ca");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  absl::StatusOr<std::string> ca = ReadFlagFile("--tls_ca", files.ca);
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = *std::move(ca);
  if (!files.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadFlagFile("--tls_cert", files.cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFlagFile("--tls_key", files.key);
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *std::move(cert);
    options.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(options);
}

void DropGrpcLogs() {
  gpr_set_log_function([](gpr_log_func_args*) {});
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           std::shared_ptr<grpc::ChannelCredentials> credentials,
                                           const std::string& api_key) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  if (api_key.empty()) return grpc::CreateCustomChannel(target, credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<ApiKeyInterceptorFactory>(api_key));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args,
                                                                 std::move(creators));
}

grpc::Status WaitForServer(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout) {
  // Not WaitForConnected: it keeps retrying a refused connection until the
  // deadline, and "nothing listens there" should fail at once.
  const auto deadline = DeadlineAfter(timeout);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_TRANSIENT_FAILURE &&
         state != GRPC_CHANNEL_SHUTDOWN) {
    if (!channel->WaitForStateChange(state, deadline)) break;  // timed out
    state = channel->GetState(/*try_to_connect=*/true);
  }
  if (state == GRPC_CHANNEL_READY) return grpc::Status::OK;
  // gRPC keeps the reason of the failed attempt to itself; a fail-fast call
  // on the failing channel ends at once and carries it.
  if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineAfter(absl::Seconds(1)));
    v1::ServerStatus ignored;
    grpc::Status s = v1::MemServe::NewStub(channel)->GetServerStatus(
        &ctx, v1::GetServerStatusRequest(), &ignored);
    // Anything but UNAVAILABLE came from a server: it is there after all.
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return grpc::Status::OK;
    }
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) return s;
  }
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      absl::StrCat("no connection within ", absl::FormatDuration(timeout)));
}

std::string CannotReachMessage(const std::string& target, const grpc::Status& status) {
  return absl::StrCat("cannot reach server at ", target, " (", FormatStatus(status), ")");
}

v1::SamplingParams BuildSamplingParams(const SamplingOptions& o) {
  v1::SamplingParams p;
  if (o.temperature) p.set_temperature(static_cast<float>(*o.temperature));
  p.set_top_k(o.top_k);
  if (o.top_p) p.set_top_p(static_cast<float>(*o.top_p));
  p.set_min_p(static_cast<float>(o.min_p));
  if (o.repetition_penalty) p.set_repetition_penalty(static_cast<float>(*o.repetition_penalty));
  p.set_frequency_penalty(static_cast<float>(o.frequency_penalty));
  p.set_presence_penalty(static_cast<float>(o.presence_penalty));
  if (o.seed) p.set_seed(*o.seed);
  if (o.max_tokens) p.set_max_tokens(*o.max_tokens);
  p.set_min_tokens(o.min_tokens);
  for (const std::string& s : o.stop) p.add_stop(s);
  for (int32_t id : o.stop_token_ids) p.add_stop_token_ids(id);
  p.set_ignore_eos(o.ignore_eos);
  p.set_logprobs(o.logprobs);
  p.set_include_stop_str(o.include_stop_str);
  return p;
}

absl::StatusOr<std::vector<std::string>> ParseStopList(absl::string_view value) {
  std::vector<std::string> out;
  if (value.empty()) return out;
  std::string cur;
  for (size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (c == ',') {
      if (cur.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--stop: empty stop string at position ", out.size()));
      }
      out.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    if (c != '\\') {
      cur.push_back(c);
      continue;
    }
    if (i + 1 == value.size()) {
      return absl::InvalidArgumentError("--stop: dangling backslash at the end");
    }
    const char e = value[++i];
    switch (e) {
      case ',':
        cur.push_back(',');
        break;
      case 'n':
        cur.push_back('\n');
        break;
      case 't':
        cur.push_back('\t');
        break;
      case 'r':
        cur.push_back('\r');
        break;
      case '\\':
        cur.push_back('\\');
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "--stop: unknown escape '\\", std::string(1, e), "' (use \\, \\n \\t \\r \\\\)"));
    }
  }
  if (cur.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--stop: empty stop string at position ", out.size()));
  }
  out.push_back(std::move(cur));
  return out;
}

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(const std::vector<std::string>& args) {
  std::vector<int32_t> ids;
  ids.reserve(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    int32_t id;
    if (!absl::SimpleAtoi(args[i], &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", i, " is not an integer: '", args[i], "'"));
    }
    ids.push_back(id);
  }
  return ids;
}

std::string EscapeBytes(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (const char ch : bytes) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out.push_back(ch);
        } else {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        }
    }
  }
  return out;
}

std::string FinishReasonName(v1::FinishReason reason) {
  std::string name = v1::FinishReason_Name(reason);
  constexpr absl::string_view kPrefix = "FINISH_REASON_";
  if (absl::string_view(name).substr(0, kPrefix.size()) == kPrefix) {
    name = name.substr(kPrefix.size());
  }
  if (name.empty()) name = absl::StrCat(static_cast<int>(reason));  // unknown value
  return name;
}

jsonl::TokenLine ToJsonlToken(const v1::Token& token) {
  jsonl::TokenLine line{token.id(), token.text(), token.logprob(), {}};
  for (const v1::TopLogprob& t : token.top_logprobs()) {
    line.top.push_back({t.id(), t.logprob(), t.token_bytes()});
  }
  return line;
}

jsonl::FinalLine ToJsonlFinal(const v1::Final& final) {
  jsonl::FinalLine line;
  line.finish_reason = absl::AsciiStrToLower(FinishReasonName(final.finish_reason()));
  line.text = final.trailing_text();
  line.prompt_tokens = final.usage().prompt_tokens();
  line.completion_tokens = final.usage().completion_tokens();
  if (final.has_stop_string()) line.stop_string = final.stop_string();
  if (final.has_stop_token_id()) line.stop_token_id = final.stop_token_id();
  return line;
}

ChatDrop OldestTurnsToDrop(const std::vector<ChatMessageSize>& messages, int64_t context,
                           int64_t reserve) {
  ChatDrop drop;
  size_t first_user = 0;
  while (first_user < messages.size() && !messages[first_user].is_user) ++first_user;
  drop.first = first_user;
  int64_t total = reserve;
  for (const ChatMessageSize& m : messages) total += m.tokens;
  // Turn boundaries after the first user message; the last turn stays.
  size_t end = first_user;
  while (total > context) {
    size_t next = end + 1;
    while (next < messages.size() && !messages[next].is_user) ++next;
    if (next >= messages.size()) break;  // only the last turn is left
    for (size_t i = end; i < next; ++i) total -= messages[i].tokens;
    end = next;
  }
  drop.count = end - first_user;
  return drop;
}

std::string FormatSummary(const v1::Final& final) {
  std::string out =
      absl::StrFormat("finish=%s prompt_tokens=%d completion_tokens=%d ttft_ms=%.1f total_ms=%.1f",
                      FinishReasonName(final.finish_reason()), final.usage().prompt_tokens(),
                      final.usage().completion_tokens(), final.timings().time_to_first_token_ms(),
                      final.timings().total_ms());
  if (final.has_stop_string()) {
    absl::StrAppend(&out, " stop_string=\"", EscapeBytes(final.stop_string()), "\"");
  }
  if (final.has_stop_token_id()) absl::StrAppend(&out, " stop_token_id=", final.stop_token_id());
  if (!final.request_id().empty()) absl::StrAppend(&out, " request_id=", final.request_id());
  return out;
}

std::string FormatMessageAsText(const google::protobuf::Message& message) {
  std::vector<std::pair<std::string, std::string>> rows;
  Flatten(message, "", &rows);
  size_t width = 0;
  for (const auto& row : rows) width = std::max(width, row.first.size());
  std::string out;
  for (const auto& [name, value] : rows) {
    // An empty value (an empty string, no repeated messages) is the name
    // alone: no trailing blanks.
    if (value.empty()) {
      absl::StrAppend(&out, name, "\n");
    } else {
      absl::StrAppend(&out, name, std::string(width - name.size() + 2, ' '), value, "\n");
    }
  }
  return out;
}

std::string FormatMessageAsJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) {
    out = "{}";  // cannot happen for a valid message
  }
  return out;
}

}  // namespace cli
}  // namespace memserve
