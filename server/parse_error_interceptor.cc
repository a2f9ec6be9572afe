#include "server/parse_error_interceptor.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/stubs/logging.h>
#include <grpcpp/support/interceptor.h>
#include <grpcpp/support/status.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "server/logging.h"

namespace memserve {
namespace {

namespace gp = ::google::protobuf;
using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

// --- the field protobuf named in its log line ---

// Protobuf 3.21 (wire_format_lite.cc, PrintUTF8ErrorLog) logs, when parsing:
//   String field 'memserve.v1.GenerateRequest.text' contains invalid UTF-8
//   data when parsing a protocol buffer. Use the 'bytes' type ...
constexpr absl::string_view kLogPrefix = "String field '";
constexpr absl::string_view kLogParsing = "' contains invalid UTF-8 data when parsing";

// The field of the last such line logged on this thread. gRPC deserializes a
// unary or server-streaming request and then runs the POST_RECV_MESSAGE
// interceptors on the same thread, which takes (and clears) it.
thread_local std::string t_invalid_utf8_field;

// Records the field of protobuf's invalid-UTF-8 line, which memserve then
// reports itself (the call's INVALID_ARGUMENT and its request log line), so
// that line is not logged again; every other protobuf line becomes one log
// line of ours (server/logging.h) instead of protobuf's raw stderr output.
void RecordingLogHandler(gp::LogLevel level, const char* filename, int line,
                         const std::string& message) {
  const absl::string_view text = message;
  if (absl::StartsWith(text, kLogPrefix)) {
    const size_t end = text.find(kLogParsing, kLogPrefix.size());
    if (end != absl::string_view::npos) {
      t_invalid_utf8_field = std::string(text.substr(kLogPrefix.size(), end - kLogPrefix.size()));
      return;
    }
  }
  const LogLevel ours = level == gp::LOGLEVEL_INFO      ? LogLevel::kInfo
                        : level == gp::LOGLEVEL_WARNING ? LogLevel::kWarning
                                                        : LogLevel::kError;
  LogLine(ours, "protobuf")
      .Field("source", absl::StrCat(filename, ":", line))
      .Field("message", message)
      .Write();
}

void InstallLogHandlerOnce() {
  static std::once_flag once;
  std::call_once(once, [] { gp::SetLogHandler(&RecordingLogHandler); });
}

std::string TakeInvalidUtf8Field() {
  std::string field;
  field.swap(t_invalid_utf8_field);
  return field;
}

// --- the message ---

// The request type of `method` ("/memserve.v1.MemServe/Tokenize"), or null
// when the method is not in protobuf's generated pool.
const gp::Descriptor* RequestType(absl::string_view method) {
  if (absl::StartsWith(method, "/")) method.remove_prefix(1);
  const gp::MethodDescriptor* m = gp::DescriptorPool::generated_pool()->FindMethodByName(
      absl::StrReplaceAll(method, {{"/", "."}}));
  return m == nullptr ? nullptr : m->input_type();
}

// Whether a message of type `root` can contain a message of type `target`.
bool Reaches(const gp::Descriptor* root, const gp::Descriptor* target) {
  std::vector<const gp::Descriptor*> todo = {root};
  std::unordered_set<const gp::Descriptor*> seen = {root};
  while (!todo.empty()) {
    const gp::Descriptor* d = todo.back();
    todo.pop_back();
    if (d == target) return true;
    for (int i = 0; i < d->field_count(); ++i) {
      const gp::Descriptor* sub = d->field(i)->message_type();
      if (sub != nullptr && seen.insert(sub).second) todo.push_back(sub);
    }
  }
  return false;
}

std::string ParseErrorMessage(absl::string_view method, absl::string_view utf8_field) {
  const gp::Descriptor* request = RequestType(method);
  if (request == nullptr) {
    return absl::StrCat("request does not parse: the request message of ", method,
                        " has a string field that is not valid UTF-8, or is malformed or missing");
  }
  if (!utf8_field.empty()) {
    // Trust the log line only for a field this request type can hold.
    const gp::FieldDescriptor* field =
        gp::DescriptorPool::generated_pool()->FindFieldByName(std::string(utf8_field));
    if (field != nullptr && Reaches(request, field->containing_type())) {
      std::string msg = absl::StrCat("request does not parse: string field '", utf8_field,
                                     "' contains invalid UTF-8");
      if (field->containing_type() != request) {
        absl::StrAppend(&msg, " (in ", request->full_name(), ")");
      }
      return msg;
    }
  }
  return absl::StrCat("request does not parse: ", request->full_name(),
                      " has a string field that is not valid UTF-8, or the message is malformed "
                      "or missing");
}

// --- the interceptor ---

// One per call.
class ParseErrorInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ParseErrorInterceptor(ServerRpcInfo* info) : info_(info) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      std::string utf8_field = TakeInvalidUtf8Field();
      if (methods->GetRecvMessage() == nullptr) {
        parse_failed_ = true;
        utf8_field_ = std::move(utf8_field);
      }
    }
    if (parse_failed_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) &&
        !methods->GetSendStatus().ok()) {
      const std::string message = ParseErrorMessage(info_->method(), utf8_field_);
      methods->ModifySendStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message));
      LogRejected(message);
    }
    methods->Proceed();
  }

 private:
  // The service's one line per request (server/service.cc), for a request no
  // handler saw: no request id, the method's short name.
  void LogRejected(const std::string& message) const {
    absl::string_view method = info_->method();
    const size_t slash = method.rfind('/');
    if (slash != absl::string_view::npos) method.remove_prefix(slash + 1);
    LogLine(LogLevel::kInfo, "request")
        .Field("id", "-")
        .Field("method", method)
        .Field("status", "INVALID_ARGUMENT")
        .Field("error", message)
        .Write();
  }

  ServerRpcInfo* const info_;
  bool parse_failed_ = false;
  std::string utf8_field_;
};

class ParseErrorInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    // Client-streaming and bidi reads see "no message" at end of stream too.
    if (info->type() != ServerRpcInfo::Type::UNARY &&
        info->type() != ServerRpcInfo::Type::SERVER_STREAMING) {
      return nullptr;
    }
    return new ParseErrorInterceptor(info);
  }
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewParseErrorInterceptorFactory() {
  InstallLogHandlerOnce();
  return std::make_unique<ParseErrorInterceptorFactory>();
}

}  // namespace memserve
