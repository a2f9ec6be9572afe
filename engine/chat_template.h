// Chat templates: turn a conversation (a list of {role, content} messages)
// into the prompt text a model was trained on, ending with the assistant's
// turn header (except "raw") so that the model continues as the assistant
// (docs/api.md, "Chat"; the template is config.json's "chat_template").
//
// Roles are "system", "user" and "assistant". Contents are UTF-8 and may be
// empty. "Whitespace" below means ASCII space, \t, \n, \v, \f, \r.
//
// BOS. The engine encodes the rendered text with the tokenizer's BOS first
// (Tokenizer::Encode(text, /*add_bos=*/true)), so no template renders a
// leading BOS: Llama-2's first "<s>" and Llama-3's "<|begin_of_text|>" come
// from the tokenizer. Every other marker ("[INST]", "</s><s>",
// "<|start_header_id|>", ...) is rendered as text; whether it becomes a single
// control token depends on the tokenizer. memserve's "bytes" and "sp"
// tokenizers encode such text as ordinary pieces (SentencePiece never maps
// text to control ids), so with them a rendered "</s><s>" is not the EOS/BOS
// ids a Llama-2 checkpoint saw in training.
//
// The templates (angle-bracketed names are contents; "\n" is a newline):
//
// "plain", for base models: every message as "<Role>: <content>\n\n" with
//   Role "System", "User" or "Assistant" and the content verbatim, then
//   "Assistant:" (no trailing space). Any order of roles.
//     [system S, user U, assistant A, user V] ->
//     "System: S\n\nUser: U\n\nAssistant: A\n\nUser: V\n\nAssistant:"
//
// "raw", for base models that never saw any chat format (the bundled demo
//   model, trained on bare sentences): the contents joined by "\n", with no
//   role names and no assistant header, so a chat turn is a plain completion
//   of the conversation's text. Any order of roles.
//     [user U, user V] -> "U\nV"
//
// "llama2", Meta's Llama-2 chat format: at most one leading system message,
//   then user and assistant strictly alternating, starting and ending with
//   user. The system content S is folded into the first user turn as
//   "<<SYS>>\nS\n<</SYS>>\n\n" + U1; then each user/assistant content is
//   stripped of leading and trailing whitespace (as Meta's reference does:
//   the folded first turn is stripped as a whole, S itself is not). Each
//   answered pair renders as "[INST] U [/INST] A </s><s>" and the final user
//   turn as "[INST] U [/INST]":
//     [user U1, assistant A1, user U2] ->
//     "[INST] U1 [/INST] A1 </s><s>[INST] U2 [/INST]"
//     [system S, user U] -> "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]"
//   (the tokenizer's BOS supplies the first "<s>").
//
// "llama3", Meta's Llama-3 instruct format: each message as
//   "<|start_header_id|>ROLE<|end_header_id|>\n\nC<|eot_id|>" with ROLE the
//   role name and C the content stripped of leading and trailing whitespace,
//   then "<|start_header_id|>assistant<|end_header_id|>\n\n". Any order of
//   roles. (The tokenizer's BOS supplies "<|begin_of_text|>".)
//     [user U] -> "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
//                 "<|start_header_id|>assistant<|end_header_id|>\n\n"
#ifndef MEMSERVE_ENGINE_CHAT_TEMPLATE_H_
#define MEMSERVE_ENGINE_CHAT_TEMPLATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace memserve {

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;  // UTF-8
};

// The template names RenderChat accepts, in documentation order:
// plain, llama2, llama3, raw.
const std::vector<std::string>& KnownChatTemplates();
// "plain, llama2, llama3, raw", for error messages.
std::string KnownChatTemplatesList();
bool IsKnownChatTemplate(absl::string_view name);

// Renders `messages` with template `template_name` (see above), ending with
// the assistant's turn header. Thread-safe (a pure function).
// Errors, all InvalidArgument; checked in this order, messages in index
// order, the first failure wins:
//   unknown template name  "unknown chat template \"x\" (supported: plain, llama2, llama3, raw)"
//   no messages            "messages is empty (at least 1 message is required)"
//   bad role               "messages[2].role must be one of system, user, assistant; got \"bot\""
//   bad content            "messages[0].content is not valid UTF-8"
//   order (llama2 only)    "messages[i].role: llama2 requires ..." naming what was
//                          expected there and what was found.
absl::StatusOr<std::string> RenderChat(absl::string_view template_name,
                                       absl::Span<const ChatMessage> messages);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_CHAT_TEMPLATE_H_
