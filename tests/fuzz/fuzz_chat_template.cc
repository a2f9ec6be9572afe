// Fuzz target: the chat template renderer (engine/chat_template.h).
//
// Input: byte 0 picks the template name (KnownChatTemplates()[byte % n], or
// for byte 0xff the rest of the first line as a name); the rest is messages,
// one per '\n'-separated line, "ROLE\tCONTENT" (a line without a tab is all
// content, role "user"). Invariants: errors are InvalidArgument; a rendered
// conversation is valid UTF-8 and contains every message's content (without
// surrounding whitespace, which llama2/llama3 strip).
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "engine/chat_template.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memserve;  // NOLINT: a C entry point
  if (size < 1) return 0;
  absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto& templates = KnownChatTemplates();
  std::string name;
  if (data[0] == 0xff) {
    const size_t newline = rest.find('\n');
    name = std::string(rest.substr(0, newline));
    rest = newline == absl::string_view::npos ? absl::string_view() : rest.substr(newline + 1);
  } else {
    name = templates[data[0] % templates.size()];
  }
  std::vector<ChatMessage> messages;
  if (!rest.empty()) {
    for (absl::string_view line : absl::StrSplit(rest, '\n')) {
      const size_t tab = line.find('\t');
      if (tab == absl::string_view::npos) {
        messages.push_back({"user", std::string(line)});
      } else {
        messages.push_back({std::string(line.substr(0, tab)), std::string(line.substr(tab + 1))});
      }
    }
  }
  absl::StatusOr<std::string> rendered = RenderChat(name, messages);
  if (!rendered.ok()) {
    FUZZ_CHECK(rendered.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(IsKnownChatTemplate(name));
  FUZZ_CHECK(!messages.empty());
  FUZZ_CHECK(IsValidUtf8(*rendered));
  // llama2 and llama3 strip each content of surrounding whitespace
  // (chat_template.h).
  for (const ChatMessage& m : messages) {
    FUZZ_CHECK(absl::StrContains(*rendered, absl::StripAsciiWhitespace(m.content)));
  }
  return 0;
}
