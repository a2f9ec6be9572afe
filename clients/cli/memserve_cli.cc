// memserve-cli: a command-line client of a memserve gRPC server.
//
//   memserve-cli [--server HOST:PORT] [--timeout 300s] COMMAND [ARGS] [FLAGS]
//
//   generate --prompt TEXT [sampling flags] [--output text|jsonl]
//   chat [--system TEXT] [--message TEXT] [sampling flags] [--output text|jsonl]
//   tokenize TEXT [--no_bos] [--bytes] [--output text|json]
//   detokenize ID... [--output text|json]
//   info [--output text|json]
//   status [--output text|json]
//   health [--service NAME]
//
// chat reads lines with libedit's editing and history when standard input is a
// terminal, plainly otherwise; /reset, /help, /exit. Ctrl-C while a reply
// streams cancels that reply (the conversation keeps what came of it);
// Ctrl-C at an empty prompt, or twice during one reply, ends the program
// (exit 130). A conversation that outgrows the model's context loses its
// oldest turns (a --system message stays), with one line on stderr.
//
// Exit codes: 0 success; 2 bad command line, or the server answered
// INVALID_ARGUMENT; 3 the server cannot be reached, or answered UNAVAILABLE
// (loading, draining); 130 chat ended by Ctrl-C; 1 anything else (for
// health: not SERVING).
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "clients/cli/cli_lib.h"
#include "clients/cli/interrupt.h"
#include "clients/cli/line_reader.h"
#include "grpc_health/v1/health.grpc.pb.h"
#include "memserve/v1/memserve.grpc.pb.h"
#include "nlohmann/json.hpp"

// Connection.
ABSL_FLAG(std::string, server, "localhost:50051", "server address, HOST:PORT");
ABSL_FLAG(std::string, api_key, "",
          "the API key sent as `authorization: Bearer <key>` (memserve serve --api_keys_file); "
          "default: the MEMSERVE_API_KEY environment variable");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(300),
          "deadline of each call (e.g. 30s, 5m; inf = none); for chat, of each turn");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(5),
          "how long to wait for a connection before giving up (exit 3)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file: the CA that signed the server's certificate; set: connect with TLS "
          "(default: plaintext)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file: this client's certificate chain, for a server that requires client "
          "certificates (mTLS); with --tls_key and --tls_ca");
ABSL_FLAG(std::string, tls_key, "", "PEM file: the private key of --tls_cert");

// Generation.
ABSL_FLAG(std::string, prompt, "", "generate: the prompt text ('-' reads it from stdin)");
ABSL_FLAG(std::string, system, "", "chat: a system message put first in the conversation");
ABSL_FLAG(std::string, message, "",
          "chat: send this one user message, print the reply and exit (no interactive loop)");
ABSL_FLAG(std::optional<int>, max_tokens, std::nullopt,
          "most tokens to generate; unset = the server's default_max_tokens");
ABSL_FLAG(double, temperature, 0.0,
          "sampling temperature; 0 = greedy (the default of memserve's command-line tools; "
          "the API's default is 1.0)");
ABSL_FLAG(int, top_k, 0, "keep the k most likely tokens; 0 = off");
ABSL_FLAG(std::optional<double>, top_p, std::nullopt, "nucleus mass in (0, 1]; unset = 1.0");
ABSL_FLAG(double, min_p, 0.0, "drop tokens below min_p * p(best); 0 = off");
ABSL_FLAG(std::optional<double>, repetition_penalty, std::nullopt,
          "CTRL-style repetition penalty in (0, 10]; unset = 1.0 (off)");
ABSL_FLAG(double, frequency_penalty, 0.0, "OpenAI-style frequency penalty in [-2, 2]");
ABSL_FLAG(double, presence_penalty, 0.0, "OpenAI-style presence penalty in [-2, 2]");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt, "RNG seed; unset = random");
ABSL_FLAG(int, min_tokens, 0, "tokens to generate before EOS/stop may end generation");
ABSL_FLAG(std::string, stop, "",
          "comma-separated stop strings; escapes: \\, (comma) \\n \\t \\r \\\\");
ABSL_FLAG(std::vector<std::string>, stop_token_ids, {}, "comma-separated stop token ids");
ABSL_FLAG(bool, ignore_eos, false, "keep generating after EOS");
ABSL_FLAG(int, logprobs, 0, "top-n alternatives per token (0..20), shown with --output jsonl");
ABSL_FLAG(bool, include_stop_str, false, "keep the matched stop string in the output");
ABSL_FLAG(std::string, request_id, "", "request id sent to the server (default: it assigns one)");
ABSL_FLAG(bool, summary, true,
          "generate/chat: print a summary line (finish reason, tokens, times) to stderr");

// Other commands.
ABSL_FLAG(std::string, output, "text",
          "output format: text, or jsonl (generate, chat) / json (tokenize, detokenize, info, "
          "status)");
ABSL_FLAG(bool, no_bos, false, "tokenize: do not put BOS first");
ABSL_FLAG(bool, bytes, false, "tokenize: also print each token's bytes (escaped)");
ABSL_FLAG(std::optional<std::string>, service, std::nullopt,
          "health: check only this service name ('liveness' = \"\", 'readiness' = "
          "memserve.v1.MemServe); default: both");

namespace memserve {
namespace cli {
namespace {

constexpr char kProgram[] = "memserve-cli";
constexpr char kReadinessService[] = "memserve.v1.MemServe";

constexpr char kUsage[] =
    "a client of a memserve gRPC server.\n"
    "\n"
    "  memserve-cli [--server HOST:PORT] [--timeout 300s] COMMAND [ARGS] [FLAGS]\n"
    "\n"
    "commands:\n"
    "  generate --prompt TEXT [--max_tokens N] [--temperature T] [--top_k K] [--top_p P]\n"
    "           [--min_p M] [--seed S] [--stop a,b] [--logprobs K] [--ignore_eos]\n"
    "           [--output text|jsonl]           stream a completion\n"
    "  chat [--system TEXT] [sampling flags]    interactive chat (reads user lines from stdin\n"
    "                                           until EOF or /exit; keeps the history, drops\n"
    "                                           its oldest turns when it outgrows the context;\n"
    "                                           /reset, /help; Ctrl-C stops a reply, at an\n"
    "                                           empty prompt it exits with 130)\n"
    "  chat --message TEXT [sampling flags]     one turn\n"
    "  tokenize TEXT [--no_bos] [--bytes]       token ids of TEXT\n"
    "  detokenize ID...                         text of token ids\n"
    "  info [--output json]                     the served model (ModelInfo)\n"
    "  status [--output json]                   server state and load\n"
    "  health [--service NAME]                  liveness and readiness (exit 0 when both SERVING)\n"
    "\n"
    "sampling flags default to greedy decoding (--temperature 0), as `memserve generate`.\n"
    "\n"
    "exit codes: 0 ok; 2 bad command line or INVALID_ARGUMENT; 3 server unreachable or\n"
    "UNAVAILABLE; 130 chat ended by Ctrl-C; 1 anything else.";

// One line to stderr, prefixed with the program name.
void Error(const std::string& message) { std::cerr << kProgram << ": " << message << "\n"; }

int UsageError(const std::string& message) {
  Error(absl::StrCat(message, " (see --help)"));
  return kExitUsage;
}

int RpcError(const grpc::Status& status) {
  Error(FormatStatus(status));
  return ExitCodeFor(status.error_code());
}

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void SetDeadline(grpc::ClientContext* ctx) {
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout == absl::InfiniteDuration() || timeout <= absl::ZeroDuration()) return;
  ctx->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
}

// The channel and a connection to the server, or the exit code when there is
// none (the message is printed).
struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::MemServe::Stub> stub;
};

std::optional<Connection> Connect(int* exit_code) {
  const std::string target = absl::GetFlag(FLAGS_server);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = ChannelCredentialsFor(
      {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key)});
  if (!credentials.ok()) {
    Error(std::string(credentials.status().message()));
    *exit_code = kExitUsage;
    return std::nullopt;
  }
  DropGrpcLogs();
  Connection c;
  c.channel = MakeChannel(target, *std::move(credentials),
                          ApiKeyFromFlagOrEnv(absl::GetFlag(FLAGS_api_key)));
  grpc::Status s = WaitForServer(c.channel, absl::GetFlag(FLAGS_connect_timeout));
  if (!s.ok()) {
    Error(CannotReachMessage(target, s));
    *exit_code = kExitUnreachable;
    return std::nullopt;
  }
  c.stub = v1::MemServe::NewStub(c.channel);
  return c;
}

absl::StatusOr<v1::SamplingParams> SamplingFromFlags() {
  SamplingOptions o;
  o.temperature = absl::GetFlag(FLAGS_temperature);
  o.top_k = absl::GetFlag(FLAGS_top_k);
  o.top_p = absl::GetFlag(FLAGS_top_p);
  o.min_p = absl::GetFlag(FLAGS_min_p);
  o.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  o.frequency_penalty = absl::GetFlag(FLAGS_frequency_penalty);
  o.presence_penalty = absl::GetFlag(FLAGS_presence_penalty);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  o.min_tokens = absl::GetFlag(FLAGS_min_tokens);
  absl::StatusOr<std::vector<std::string>> stop = ParseStopList(absl::GetFlag(FLAGS_stop));
  if (!stop.ok()) return stop.status();
  o.stop = *std::move(stop);
  absl::StatusOr<std::vector<int32_t>> stop_ids =
      ParseTokenIds(absl::GetFlag(FLAGS_stop_token_ids));
  if (!stop_ids.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--stop_token_ids: ", stop_ids.status().message()));
  }
  o.stop_token_ids = *std::move(stop_ids);
  o.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  o.logprobs = absl::GetFlag(FLAGS_logprobs);
  o.include_stop_str = absl::GetFlag(FLAGS_include_stop_str);
  return BuildSamplingParams(o);
}

// Reads a Generate or Chat stream to its end, printing as it goes: text deltas
// (then trailing_text and a newline), or one JSON object per message.
struct StreamResult {
  grpc::Status status;
  std::string text;  // the whole output received
  int tokens = 0;    // token messages received
  bool got_final = false;
  v1::Final final;
};

StreamResult PrintStream(grpc::ClientReaderInterface<v1::GenerateResponse>* reader, bool jsonl) {
  StreamResult r;
  v1::GenerateResponse msg;
  bool printed = false;
  while (reader->Read(&msg)) {
    if (msg.has_token()) {
      const v1::Token& t = msg.token();
      r.text += t.text();
      ++r.tokens;
      if (jsonl) {
        std::cout << jsonl::FormatToken(ToJsonlToken(t)) << "\n";
      } else {
        std::cout << t.text();
        printed = printed || !t.text().empty();
      }
      std::cout.flush();
    } else if (msg.has_final()) {
      const v1::Final& f = msg.final();
      r.text += f.trailing_text();
      r.got_final = true;
      r.final = f;
      if (jsonl) {
        std::cout << jsonl::FormatFinal(ToJsonlFinal(f)) << "\n";
      } else {
        std::cout << f.trailing_text() << "\n";
        printed = false;
      }
      std::cout.flush();
      if (absl::GetFlag(FLAGS_summary)) std::cerr << FormatSummary(f) << "\n";
    }
  }
  r.status = reader->Finish();
  if (printed) std::cout << "\n" << std::flush;  // end the partial line before the error
  if (r.status.ok() && !r.got_final) {
    r.status = grpc::Status(grpc::StatusCode::INTERNAL,
                            "the stream ended without a final message (non-conforming server)");
  }
  return r;
}

// OK when --output is one of `allowed`; else prints a usage error.
bool OutputIs(std::initializer_list<const char*> allowed, const std::string& command,
              std::string* output, int* exit_code) {
  *output = absl::GetFlag(FLAGS_output);
  for (const char* a : allowed) {
    if (*output == a) return true;
  }
  *exit_code = UsageError(absl::StrCat(command, ": --output must be ",
                                       absl::StrJoin(allowed, " or "), ", got '", *output, "'"));
  return false;
}

int RunGenerate(const std::vector<std::string>& args) {
  std::string output;
  int code = kExitOk;
  if (!OutputIs({"text", "jsonl"}, "generate", &output, &code)) return code;
  std::string prompt = absl::GetFlag(FLAGS_prompt);
  if (prompt.empty() && args.size() == 1)
    prompt = args[0];  // `generate TEXT`
  else if (!args.empty())
    return UsageError("generate: unexpected argument '" + args[0] + "'");
  if (prompt.empty()) return UsageError("generate needs --prompt TEXT");
  if (prompt == "-") {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  absl::StatusOr<v1::SamplingParams> sampling = SamplingFromFlags();
  if (!sampling.ok()) return UsageError(std::string(sampling.status().message()));

  std::optional<Connection> conn = Connect(&code);
  if (!conn) return code;
  v1::GenerateRequest req;
  req.set_text(prompt);
  *req.mutable_sampling() = *sampling;
  req.set_request_id(absl::GetFlag(FLAGS_request_id));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      conn->stub->Generate(&ctx, req);
  StreamResult r = PrintStream(reader.get(), output == "jsonl");
  return r.status.ok() ? kExitOk : RpcError(r.status);
}

constexpr char kChatHelp[] =
    "commands:\n"
    "  /reset   forget the conversation (a --system message stays)\n"
    "  /help    this text\n"
    "  /exit    leave (also Ctrl-D, or Ctrl-C at an empty prompt)\n"
    "Ctrl-C while a reply streams stops that reply; the conversation goes on.\n"
    "When the conversation outgrows the model's context, its oldest turns are dropped.\n";

// Exit code after Ctrl-C at the prompt: the shell's for an interrupt.
constexpr int kExitInterrupted = 130;

// A chat conversation and what the server tells about its size.
class ChatSession {
 public:
  struct Turn {
    grpc::Status status;
    bool cancelled = false;  // by Ctrl-C; the partial reply joined the history
    int interrupts = 0;      // Ctrl-C presses while the turn ran
  };

  ChatSession(Connection& conn, v1::SamplingParams sampling, bool jsonl, SigintPipe* interrupts)
      : conn_(conn), sampling_(std::move(sampling)), jsonl_(jsonl), interrupts_(interrupts) {}

  // Asks the server for the model's context (GetModelInfo).
  grpc::Status Init(const std::string& system) {
    v1::ModelInfo info;
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    grpc::Status s = conn_.stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    if (!s.ok()) return s;
    context_ = info.max_seqlen();
    // Room kept for the reply: max_tokens, or when the server picks it, a
    // quarter of the context (enough for an answer, most left to the history).
    reserve_ = sampling_.has_max_tokens()
                   ? sampling_.max_tokens()
                   : std::min<int64_t>(info.limits().default_max_tokens(), context_ / 4);
    if (!system.empty()) system_ = Message("system", system);
    Reset();
    return grpc::Status::OK;
  }

  void Reset() {
    history_.clear();
    if (system_) history_.push_back(*system_);
  }

  // One exchange. The user's line and the reply join the history when the
  // call succeeds, or is cancelled by Ctrl-C (with the part of the reply that
  // came); on an error the history stays as it was.
  Turn Send(const std::string& user) {
    std::vector<Entry> sent = history_;
    sent.push_back(Message("user", user));
    // Leave out the oldest turns that would not fit the context.
    std::vector<ChatMessageSize> sizes;
    for (const Entry& e : sent) {
      sizes.push_back({e.message.role() == "user", e.tokens + overhead_per_message_});
    }
    ChatDrop drop = OldestTurnsToDrop(sizes, context_, reserve_);
    size_t dropped = drop.count;
    sent.erase(sent.begin() + drop.first, sent.begin() + drop.first + drop.count);

    Turn turn;
    StreamResult r;
    while (true) {
      v1::ChatRequest req;
      for (const Entry& e : sent) *req.add_messages() = e.message;
      *req.mutable_sampling() = sampling_;
      req.set_request_id(absl::GetFlag(FLAGS_request_id));
      grpc::ClientContext ctx;
      SetDeadline(&ctx);
      {
        std::optional<OnInterrupt> cancel;
        if (interrupts_ != nullptr) cancel.emplace(*interrupts_, [&ctx] { ctx.TryCancel(); });
        std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
            conn_.stub->Chat(&ctx, req);
        r = PrintStream(reader.get(), jsonl_);
        if (cancel) turn.interrupts = cancel->count();
      }
      // The estimate can be short (template tokens are learned from the first
      // reply): a prompt refused before any token makes room and tries again.
      if (r.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT && r.tokens == 0 &&
          turn.interrupts == 0) {
        const size_t n = DropOldestTurn(&sent);
        if (n > 0) {
          dropped += n;
          continue;
        }
      }
      break;
    }
    turn.status = r.status;
    turn.cancelled = !r.status.ok() && turn.interrupts > 0;
    if (!r.status.ok() && !turn.cancelled) return turn;
    if (r.got_final) Learn(sent, r.final.usage().prompt_tokens());
    sent.push_back(Message("assistant", r.text));
    history_ = std::move(sent);
    if (dropped > 0) {
      Error(absl::StrCat("the conversation outgrew the model's context (", context_,
                         " tokens): dropped its ", dropped, " oldest message",
                         dropped == 1 ? "" : "s"));
    }
    return turn;
  }

 private:
  struct Entry {
    v1::ChatMessage message;
    int64_t tokens = 0;  // of the content alone
  };

  // Drops the oldest turn after the system prompt, unless it is the last
  // one; returns the messages dropped.
  static size_t DropOldestTurn(std::vector<Entry>* sent) {
    auto is_user = [](const Entry& e) { return e.message.role() == "user"; };
    const auto first = std::find_if(sent->begin(), sent->end(), is_user);
    if (first == sent->end()) return 0;
    const auto next = std::find_if(first + 1, sent->end(), is_user);
    if (next == sent->end()) return 0;
    const size_t n = static_cast<size_t>(next - first);
    sent->erase(first, next);
    return n;
  }

  Entry Message(const std::string& role, const std::string& content) {
    Entry e;
    e.message.set_role(role);
    e.message.set_content(content);
    e.tokens = CountTokens(content);
    return e;
  }

  // Tokens of `text` (Tokenize, without BOS); its bytes if the call fails.
  int64_t CountTokens(const std::string& text) {
    if (text.empty()) return 0;
    v1::TokenizeRequest req;
    req.set_text(text);
    req.set_add_bos(false);
    v1::TokenizeResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    if (!conn_.stub->Tokenize(&ctx, req, &resp).ok()) return static_cast<int64_t>(text.size());
    return resp.token_ids_size();
  }

  // The template's tokens per message (BOS, role names, separators), from
  // what the server counted for the prompt of `sent`.
  void Learn(const std::vector<Entry>& sent, int64_t prompt_tokens) {
    if (sent.empty()) return;
    int64_t content = 0;
    for (const Entry& e : sent) content += e.tokens;
    const int64_t n = static_cast<int64_t>(sent.size());
    overhead_per_message_ = std::max<int64_t>(0, (prompt_tokens - content + n - 1) / n);
  }

  Connection& conn_;
  const v1::SamplingParams sampling_;
  const bool jsonl_;
  SigintPipe* interrupts_;
  std::optional<Entry> system_;
  std::vector<Entry> history_;
  int64_t context_ = 0;
  int64_t reserve_ = 0;
  int64_t overhead_per_message_ = 0;
};

int RunChat(const std::vector<std::string>& args) {
  std::string output;
  int code = kExitOk;
  if (!OutputIs({"text", "jsonl"}, "chat", &output, &code)) return code;
  if (!args.empty()) {
    return UsageError("chat: unexpected argument '" + args[0] + "' (use --message TEXT)");
  }
  absl::StatusOr<v1::SamplingParams> sampling = SamplingFromFlags();
  if (!sampling.ok()) return UsageError(std::string(sampling.status().message()));
  std::optional<Connection> conn = Connect(&code);
  if (!conn) return code;

  // From here on Ctrl-C stops a reply, or at the prompt ends the program.
  SigintPipe interrupts;
  ChatSession chat(*conn, *sampling, output == "jsonl", &interrupts);
  if (grpc::Status s = chat.Init(absl::GetFlag(FLAGS_system)); !s.ok()) return RpcError(s);

  const std::string message = absl::GetFlag(FLAGS_message);
  if (!message.empty()) {
    const ChatSession::Turn turn = chat.Send(message);
    if (turn.cancelled) return kExitInterrupted;
    return turn.status.ok() ? kExitOk : RpcError(turn.status);
  }
  const bool tty = isatty(STDIN_FILENO) != 0;
  std::unique_ptr<LineReader> reader = LineReader::Create(tty, "> ", interrupts);
  std::string line;
  while (true) {
    const LineReader::Result read = reader->Read(&line);
    if (read == LineReader::Result::kEof) break;
    if (read == LineReader::Result::kInterrupted) {
      if (tty) std::cerr << "\n";
      if (line.empty()) return kExitInterrupted;
      continue;  // Ctrl-C on a typed line discards it
    }
    if (line.empty()) continue;
    reader->AddHistory(line);
    if (line == "/exit") return kExitOk;
    if (line == "/help") {
      std::cerr << kChatHelp;
      continue;
    }
    if (line == "/reset") {
      chat.Reset();
      Error("conversation cleared");
      continue;
    }
    if (line[0] == '/') {
      Error(absl::StrCat("unknown command '", line, "' (/help lists them)"));
      continue;
    }
    const ChatSession::Turn turn = chat.Send(line);
    if (turn.interrupts > 1) return kExitInterrupted;  // a second Ctrl-C
    if (turn.cancelled) {
      Error("reply cancelled (Ctrl-C at an empty prompt exits)");
      continue;
    }
    if (turn.status.ok()) continue;
    // At a terminal the user can go on (the failed line is forgotten);
    // a script learns of the failure through the exit code.
    if (!tty) return RpcError(turn.status);
    Error(FormatStatus(turn.status));
  }
  if (tty) std::cerr << "\n";
  return kExitOk;
}

// Bytes in double quotes, with quotes and non-printables escaped.
std::string Quoted(const std::string& bytes) {
  std::string out = "\"";
  for (const char c : EscapeBytes(bytes)) {
    if (c == '"') out += '\\';
    out += c;
  }
  return out + "\"";
}

int RunTokenize(const std::vector<std::string>& args) {
  std::string output;
  int code = kExitOk;
  if (!OutputIs({"text", "json"}, "tokenize", &output, &code)) return code;
  if (args.size() != 1) return UsageError("tokenize takes one argument, the TEXT");
  std::optional<Connection> conn = Connect(&code);
  if (!conn) return code;
  v1::TokenizeRequest req;
  req.set_text(args[0]);
  if (absl::GetFlag(FLAGS_no_bos)) req.set_add_bos(false);
  const bool bytes = absl::GetFlag(FLAGS_bytes);
  req.set_return_token_bytes(bytes);
  v1::TokenizeResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status s = conn->stub->Tokenize(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (output == "json") {
    nlohmann::json j = {{"token_ids", resp.token_ids()}};
    if (bytes) {
      nlohmann::json b = nlohmann::json::array();
      for (const std::string& t : resp.token_bytes()) b.push_back(EscapeBytes(t));
      j["token_bytes"] = b;
    }
    std::cout << Dump(j) << "\n";
  } else if (bytes) {
    for (int i = 0; i < resp.token_ids_size(); ++i) {
      const std::string tb = i < resp.token_bytes_size() ? resp.token_bytes(i) : "";
      std::cout << resp.token_ids(i) << "\t" << Quoted(tb) << "\n";
    }
  } else {
    std::cout << absl::StrJoin(resp.token_ids(), " ") << "\n";
  }
  return kExitOk;
}

int RunDetokenize(const std::vector<std::string>& args) {
  std::string output;
  int code = kExitOk;
  if (!OutputIs({"text", "json"}, "detokenize", &output, &code)) return code;
  if (args.empty()) return UsageError("detokenize takes token ids: detokenize ID...");
  absl::StatusOr<std::vector<int32_t>> ids = ParseTokenIds(args);
  if (!ids.ok()) return UsageError(absl::StrCat("detokenize: ", ids.status().message()));
  std::optional<Connection> conn = Connect(&code);
  if (!conn) return code;
  v1::DetokenizeRequest req;
  for (int32_t id : *ids) req.add_token_ids(id);
  v1::DetokenizeResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status s = conn->stub->Detokenize(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (output == "json") {
    std::cout << Dump({{"text", resp.text()}}) << "\n";
  } else {
    std::cout << resp.text() << "\n";
  }
  return kExitOk;
}

// info and status: one unary call, its answer as text or JSON.
template <typename Request, typename Response, typename Call>
int RunInfoCall(const std::string& command, const std::vector<std::string>& args, Call call) {
  std::string output;
  int code = kExitOk;
  if (!OutputIs({"text", "json"}, command, &output, &code)) return code;
  if (!args.empty()) return UsageError(command + ": unexpected argument '" + args[0] + "'");
  std::optional<Connection> conn = Connect(&code);
  if (!conn) return code;
  Response resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status s = call(*conn->stub, &ctx, Request(), &resp);
  if (!s.ok()) return RpcError(s);
  std::cout << (output == "json" ? FormatMessageAsJson(resp) : FormatMessageAsText(resp));
  if (output == "json") std::cout << "\n";
  return kExitOk;
}

int RunHealth(const std::vector<std::string>& args) {
  if (!args.empty()) return UsageError("health: unexpected argument '" + args[0] + "'");
  using grpc::health::v1::HealthCheckResponse;
  struct Check {
    std::string label;
    std::string service;
  };
  std::vector<Check> checks;
  if (const std::optional<std::string> only = absl::GetFlag(FLAGS_service)) {
    if (*only == "liveness") {
      checks.push_back({"liveness", ""});
    } else if (*only == "readiness") {
      checks.push_back({"readiness", kReadinessService});
    } else {
      checks.push_back({"service", *only});
    }
  } else {
    checks = {{"liveness", ""}, {"readiness", kReadinessService}};
  }
  int code = kExitOk;
  std::optional<Connection> conn = Connect(&code);
  if (!conn) return code;
  std::unique_ptr<grpc::health::v1::Health::Stub> health =
      grpc::health::v1::Health::NewStub(conn->channel);
  bool all_serving = true;
  for (const Check& c : checks) {
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(c.service);
    HealthCheckResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    grpc::Status s = health->Check(&ctx, req, &resp);
    std::string state;
    if (s.ok()) {
      state = HealthCheckResponse::ServingStatus_Name(resp.status());
      if (state.empty()) state = absl::StrCat("status ", static_cast<int>(resp.status()));
    } else if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      state = "SERVICE_UNKNOWN (NOT_FOUND)";
    } else {
      return RpcError(s);
    }
    all_serving = all_serving && s.ok() && resp.status() == HealthCheckResponse::SERVING;
    std::cout << absl::StrFormat("%-10s %-24s %s\n", c.label, absl::StrCat("\"", c.service, "\""),
                                 state);
  }
  return all_serving ? kExitOk : kExitOther;
}

int Main(int argc, char** argv) {
  std::vector<char*> argv_left = ParseCommandLineWithExitCodes(argc, argv, "clients/cli/", kUsage);
  if (argv_left.size() < 2) return UsageError("no command given");
  const std::string command = argv_left[1];
  const std::vector<std::string> args(argv_left.begin() + 2, argv_left.end());

  if (command == "generate") return RunGenerate(args);
  if (command == "chat") return RunChat(args);
  if (command == "tokenize") return RunTokenize(args);
  if (command == "detokenize") return RunDetokenize(args);
  if (command == "info") {
    return RunInfoCall<v1::GetModelInfoRequest, v1::ModelInfo>(
        "info", args,
        [](v1::MemServe::Stub& stub, grpc::ClientContext* ctx, const v1::GetModelInfoRequest& req,
           v1::ModelInfo* resp) { return stub.GetModelInfo(ctx, req, resp); });
  }
  if (command == "status") {
    return RunInfoCall<v1::GetServerStatusRequest, v1::ServerStatus>(
        "status", args,
        [](v1::MemServe::Stub& stub, grpc::ClientContext* ctx,
           const v1::GetServerStatusRequest& req,
           v1::ServerStatus* resp) { return stub.GetServerStatus(ctx, req, resp); });
  }
  if (command == "health") return RunHealth(args);
  return UsageError("unknown command '" + command +
                    "' (expected generate, chat, tokenize, detokenize, info, status or health)");
}

}  // namespace
}  // namespace cli
}  // namespace memserve

int main(int argc, char** argv) { return memserve::cli::Main(argc, argv); }
