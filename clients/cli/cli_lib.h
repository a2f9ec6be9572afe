// The testable pieces of memserve-cli (and memserve-loadgen): building
// requests from command-line values, mapping gRPC statuses to messages and
// exit codes, and formatting responses as text or JSON. Nothing here does I/O
// except WaitForServer, which connects a channel, and ChannelCredentialsFor,
// which reads the TLS files.
#ifndef MEMSERVE_CLIENTS_CLI_CLI_LIB_H_
#define MEMSERVE_CLIENTS_CLI_CLI_LIB_H_

#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "clients/common/generation_jsonl.h"
#include "memserve/v1/memserve.pb.h"

namespace memserve {
namespace cli {

// Process exit codes shared by memserve's command-line clients.
inline constexpr int kExitOk = 0;
inline constexpr int kExitOther = 1;
// Bad command line, or the server answered INVALID_ARGUMENT.
inline constexpr int kExitUsage = 2;
// No connection to the server, or it answered UNAVAILABLE (loading,
// draining): try again later.
inline constexpr int kExitUnreachable = 3;

// The receive limit memserve's clients use (docs/api.md, "Message size").
inline constexpr int kMaxReceiveBytes = 64 << 20;

// "OK", "INVALID_ARGUMENT", ...; "CODE_<n>" for a number gRPC does not name.
std::string StatusCodeName(grpc::StatusCode code);

// absl::ParseCommandLine with our exit codes: absl ends the process itself,
// with code 1, after --help and after a bad flag; here --help (and the other
// help/version flags) exit kExitOk and a bad command line kExitUsage. --help
// lists the flags defined in files whose path contains `flags_dir` (e.g.
// "clients/cli/"; absl's default matches the program name, and memserve-cli is
// not memserve_cli). Returns the positional arguments (argv[0] first).
std::vector<char*> ParseCommandLineWithExitCodes(int argc, char** argv, absl::string_view flags_dir,
                                                 const char* usage);

// kExitUsage for INVALID_ARGUMENT, kExitUnreachable for UNAVAILABLE, else
// kExitOther (kExitOk for OK).
int ExitCodeFor(grpc::StatusCode code);

// "CODE: message", or just "CODE" when the message is empty.
std::string FormatStatus(const grpc::Status& status);

// The TLS flags of a client (--tls_ca, --tls_cert, --tls_key): file paths,
// empty when not given.
struct ClientTlsFiles {
  std::string ca;    // the server's CA (PEM); set: TLS
  std::string cert;  // the client's certificate chain (PEM), for mTLS
  std::string key;   // its private key (PEM)
};

// The channel credentials for `files`: insecure when none is set, TLS
// trusting `ca` when it is, with the client certificate when `cert` and `key`
// are. InvalidArgument naming the flags when only one of --tls_cert and
// --tls_key is set or they are set without --tls_ca; NotFound naming the flag
// and the file when a file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const ClientTlsFiles& files);

// Drops gRPC's own log lines (e.g. its multi-line dump of a failed TLS
// handshake) for the rest of the process: a client reports each failure in
// one line of its own, with the reason gRPC puts in the call's status.
void DropGrpcLogs();

// A channel to `target` over `credentials` (insecure when null) with the
// receive limit raised to kMaxReceiveBytes; with `api_key` not empty, every
// call sends `authorization: Bearer <api_key>` (memserve serve
// --api_keys_file).
std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& target, std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr,
    const std::string& api_key = "");

// The --api_key flag's value, or the MEMSERVE_API_KEY environment variable
// when the flag is empty ("" when neither is set).
std::string ApiKeyFromFlagOrEnv(const std::string& flag_value);

// Waits up to `timeout` for `channel` to connect. OK when connected; else
// UNAVAILABLE (or DEADLINE_EXCEEDED when still connecting at the timeout),
// with gRPC's reason when it gave one.
grpc::Status WaitForServer(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout);

// The one line printed when WaitForServer fails, e.g.
// "cannot reach server at localhost:50051 (UNAVAILABLE: ...)".
std::string CannotReachMessage(const std::string& target, const grpc::Status& status);

// Sampling values from the command line. Unset optionals are left unset in
// the request, so the server applies its documented defaults.
struct SamplingOptions {
  std::optional<double> temperature;
  int top_k = 0;
  std::optional<double> top_p;
  double min_p = 0;
  std::optional<double> repetition_penalty;
  double frequency_penalty = 0;
  double presence_penalty = 0;
  std::optional<uint64_t> seed;
  std::optional<int> max_tokens;
  int min_tokens = 0;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int logprobs = 0;
  bool include_stop_str = false;
};

// The request's SamplingParams. Values are copied as given: the server
// validates them and names the field in its INVALID_ARGUMENT message.
v1::SamplingParams BuildSamplingParams(const SamplingOptions& options);

// Splits a --stop value at commas. Backslash escapes: "\," is a comma inside
// a string, "\n", "\t", "\r", "\\" as in C. An empty input gives no strings;
// INVALID_ARGUMENT for an empty string between commas, or an unknown or
// dangling escape.
absl::StatusOr<std::vector<std::string>> ParseStopList(absl::string_view value);

// Parses token ids ("12", "7") for detokenize; INVALID_ARGUMENT names the
// first argument that is not an int32.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(const std::vector<std::string>& args);

// Bytes made printable: printable ASCII as is (and "\\" for a backslash),
// everything else as \n, \t, \r or \xNN.
std::string EscapeBytes(absl::string_view bytes);

// "LENGTH", "EOS", "STOP" (the enum value name without its prefix).
std::string FinishReasonName(v1::FinishReason reason);

// A streamed token / the final message as the shared JSONL lines
// (clients/common/generation_jsonl.h): finish reasons in lower case
// ("length", "eos", "stop"), top entries with the token's bytes as "text".
jsonl::TokenLine ToJsonlToken(const v1::Token& token);
jsonl::FinalLine ToJsonlFinal(const v1::Final& final);

// One message of a chat conversation, for fitting it into the context.
struct ChatMessageSize {
  bool is_user = false;  // each user message starts a turn
  int64_t tokens = 0;    // its tokens in the rendered prompt (template text included)
};

// The messages [first, first + count) of a conversation to leave out so that
// its tokens plus `reserve` (room for the reply) fit `context`: whole turns (a
// user message and the messages after it up to the next user message), oldest
// first, never the messages before the first user message (a system prompt)
// nor the last turn. count 0 when everything fits; every droppable turn when
// even the rest alone does not fit.
struct ChatDrop {
  size_t first = 0;
  size_t count = 0;
};
ChatDrop OldestTurnsToDrop(const std::vector<ChatMessageSize>& messages, int64_t context,
                           int64_t reserve);

// The one-line summary of a finished stream, e.g.
// "finish=LENGTH prompt_tokens=5 completion_tokens=16 ttft_ms=12.3
//  total_ms=45.6 request_id=abc" (one line).
std::string FormatSummary(const v1::Final& final);

// Every field of `message` (set or not), one "name  value" line each, names
// aligned: nested messages flattened with dotted names ("limits.max_queue"),
// repeated fields as comma-separated lists, enums by name, bytes escaped.
std::string FormatMessageAsText(const google::protobuf::Message& message);

// `message` as JSON with the proto field names and every field printed.
std::string FormatMessageAsJson(const google::protobuf::Message& message);

}  // namespace cli
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_CLI_CLI_LIB_H_
