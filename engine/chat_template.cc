#include "engine/chat_template.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/status_macros.h"
#include "engine/tokenizer.h"

namespace memserve {
namespace {

constexpr char kSystem[] = "system";
constexpr char kUser[] = "user";
constexpr char kAssistant[] = "assistant";

// A client-supplied name in an error message: C-escaped, quoted, cut short.
std::string Quote(absl::string_view s) {
  constexpr size_t kMaxShown = 40;
  std::string shown = absl::CHexEscape(s.substr(0, kMaxShown));
  if (s.size() > kMaxShown) absl::StrAppend(&shown, "...");
  return absl::StrCat("\"", shown, "\"");
}

std::string Field(size_t i, absl::string_view member) {
  return absl::StrCat("messages[", i, "].", member);
}

// Roles and contents every template needs.
absl::Status ValidateMessages(absl::Span<const ChatMessage> messages) {
  if (messages.empty()) {
    return absl::InvalidArgumentError("messages is empty (at least 1 message is required)");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != kSystem && m.role != kUser && m.role != kAssistant) {
      return absl::InvalidArgumentError(absl::StrCat(
          Field(i, "role"), " must be one of system, user, assistant; got ", Quote(m.role)));
    }
    if (!IsValidUtf8(m.content)) {
      return absl::InvalidArgumentError(absl::StrCat(Field(i, "content"), " is not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

std::string RenderPlain(absl::Span<const ChatMessage> messages) {
  std::string out;
  for (const ChatMessage& m : messages) {
    const char* name = m.role == kSystem ? "System" : m.role == kUser ? "User" : "Assistant";
    absl::StrAppend(&out, name, ": ", m.content, "\n\n");
  }
  out += "Assistant:";
  return out;
}

std::string RenderRaw(absl::Span<const ChatMessage> messages) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) out += "\n";
    out += messages[i].content;
  }
  return out;
}

absl::StatusOr<std::string> RenderLlama2(absl::Span<const ChatMessage> messages) {
  constexpr char kRule[] =
      "llama2 requires user/assistant alternation after at most one leading system message, "
      "ending with a user message";
  const size_t first = messages[0].role == kSystem ? 1 : 0;
  for (size_t i = first; i < messages.size(); ++i) {
    const char* want = (i - first) % 2 == 0 ? kUser : kAssistant;
    if (messages[i].role != want) {
      return absl::InvalidArgumentError(absl::StrCat(Field(i, "role"), ": ", kRule, "; expected \"",
                                                     want, "\", got ", Quote(messages[i].role)));
    }
  }
  const size_t last = messages.size() - 1;
  if (messages[last].role != kUser) {
    const std::string what = messages.size() == 1
                                 ? "a system message alone has no user turn"
                                 : absl::StrCat("the last message is ", Quote(messages[last].role));
    return absl::InvalidArgumentError(absl::StrCat(Field(last, "role"), ": ", kRule, "; ", what));
  }

  std::string out;
  for (size_t i = first; i < messages.size(); i += 2) {
    std::string user = messages[i].content;
    if (i == first && first == 1) {
      user = absl::StrCat("<<SYS>>\n", messages[0].content, "\n<</SYS>>\n\n", user);
    }
    absl::StrAppend(&out, "[INST] ", absl::StripAsciiWhitespace(user), " [/INST]");
    if (i + 1 < messages.size()) {
      absl::StrAppend(&out, " ", absl::StripAsciiWhitespace(messages[i + 1].content), " </s><s>");
    }
  }
  return out;
}

std::string RenderLlama3(absl::Span<const ChatMessage> messages) {
  std::string out;
  for (const ChatMessage& m : messages) {
    absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n",
                    absl::StripAsciiWhitespace(m.content), "<|eot_id|>");
  }
  out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

}  // namespace

const std::vector<std::string>& KnownChatTemplates() {
  static const auto* const kNames = new std::vector<std::string>{"plain", "llama2", "llama3", "raw"};
  return *kNames;
}

std::string KnownChatTemplatesList() { return absl::StrJoin(KnownChatTemplates(), ", "); }

bool IsKnownChatTemplate(absl::string_view name) {
  for (const std::string& known : KnownChatTemplates()) {
    if (name == known) return true;
  }
  return false;
}

absl::StatusOr<std::string> RenderChat(absl::string_view template_name,
                                       absl::Span<const ChatMessage> messages) {
  if (!IsKnownChatTemplate(template_name)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown chat template ", Quote(template_name),
                                                   " (supported: ", KnownChatTemplatesList(), ")"));
  }
  RETURN_IF_ERROR(ValidateMessages(messages));
  if (template_name == "plain") return RenderPlain(messages);
  if (template_name == "raw") return RenderRaw(messages);
  if (template_name == "llama2") return RenderLlama2(messages);
  return RenderLlama3(messages);
}

}  // namespace memserve
