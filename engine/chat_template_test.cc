#include "engine/chat_template.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const ChatMessage kSys{"system", "Be brief."};
const ChatMessage kU1{"user", "Hi!"};
const ChatMessage kA1{"assistant", "Hello."};
const ChatMessage kU2{"user", "What is 2+2?"};

std::string Render(absl::string_view name, std::vector<ChatMessage> msgs) {
  absl::StatusOr<std::string> out = RenderChat(name, msgs);
  EXPECT_TRUE(out.ok()) << name << ": " << out.status();
  return out.ok() ? *out : "";
}

void ExpectError(absl::string_view name, std::vector<ChatMessage> msgs, absl::string_view want) {
  absl::StatusOr<std::string> out = RenderChat(name, msgs);
  ASSERT_FALSE(out.ok()) << name << " rendered: " << *out;
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  EXPECT_EQ(out.status().message(), want);
}

TEST(ChatTemplateTest, Names) {
  EXPECT_THAT(KnownChatTemplates(), ElementsAre("plain", "llama2", "llama3", "raw"));
  EXPECT_EQ(KnownChatTemplatesList(), "plain, llama2, llama3, raw");
  EXPECT_TRUE(IsKnownChatTemplate("plain"));
  EXPECT_TRUE(IsKnownChatTemplate("llama2"));
  EXPECT_TRUE(IsKnownChatTemplate("llama3"));
  EXPECT_FALSE(IsKnownChatTemplate(""));
  EXPECT_FALSE(IsKnownChatTemplate("Llama3"));
  EXPECT_FALSE(IsKnownChatTemplate("chatml"));
}

// Every name RenderChat knows is one config.json may name, and vice versa
// (engine/config.cc keeps its own list: config cannot depend on this library).
TEST(ChatTemplateTest, AgreesWithConfig) {
  const std::string base = R"({"format": "memserve-llama-pk", "format_version": 1,
      "dim": 8, "n_layers": 1, "n_heads": 1, "ffn_hidden_dim": 8, "vocab_size": 258,
      "max_seqlen": 16, "tokenizer": {"kind": "bytes"}, "chat_template": ")";
  for (const std::string& name : KnownChatTemplates()) {
    absl::StatusOr<ModelConfig> cfg = ModelConfig::FromJson(base + name + "\"}");
    ASSERT_TRUE(cfg.ok()) << name << ": " << cfg.status();
    EXPECT_EQ(cfg->chat_template, name);
  }
  absl::StatusOr<ModelConfig> bad = ModelConfig::FromJson(base + "chatml\"}");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr(absl::StrCat("(supported: ", KnownChatTemplatesList(), ")")));
}

TEST(ChatTemplateTest, Plain) {
  EXPECT_EQ(Render("plain", {kU1}), "User: Hi!\n\nAssistant:");
  EXPECT_EQ(Render("plain", {kSys, kU1}), "System: Be brief.\n\nUser: Hi!\n\nAssistant:");
  EXPECT_EQ(Render("plain", {kSys, kU1, kA1, kU2}),
            "System: Be brief.\n\nUser: Hi!\n\nAssistant: Hello.\n\nUser: What is 2+2?\n\n"
            "Assistant:");
  // Contents verbatim (no stripping), empty allowed, any order of roles.
  EXPECT_EQ(Render("plain", {{"user", " a \n"}, {"user", ""}}),
            "User:  a \n\n\nUser: \n\nAssistant:");
  EXPECT_EQ(Render("plain", {{"assistant", "x"}, {"system", "y"}}),
            "Assistant: x\n\nSystem: y\n\nAssistant:");
}

TEST(ChatTemplateTest, Llama2) {
  EXPECT_EQ(Render("llama2", {kU1}), "[INST] Hi! [/INST]");
  EXPECT_EQ(Render("llama2", {kSys, kU1}), "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST]");
  EXPECT_EQ(Render("llama2", {kU1, kA1, kU2}),
            "[INST] Hi! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]");
  EXPECT_EQ(Render("llama2", {kSys, kU1, kA1, kU2}),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>"
            "[INST] What is 2+2? [/INST]");
  EXPECT_EQ(Render("llama2", {kU1, kA1, kU2, {"assistant", "4"}, {"user", "Thanks"}}),
            "[INST] Hi! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST] 4 </s><s>"
            "[INST] Thanks [/INST]");
}

TEST(ChatTemplateTest, Llama2Whitespace) {
  // User and assistant contents are stripped; with a system prompt the folded
  // first turn is stripped as a whole, so the system content is kept as is.
  EXPECT_EQ(Render("llama2", {{"user", "  Hi \n"}, {"assistant", "\tHello "}, {"user", " x"}}),
            "[INST] Hi [/INST] Hello </s><s>[INST] x [/INST]");
  EXPECT_EQ(Render("llama2", {{"system", " S "}, {"user", " U "}}),
            "[INST] <<SYS>>\n S \n<</SYS>>\n\n U [/INST]");
  EXPECT_EQ(Render("llama2", {{"user", ""}}), "[INST]  [/INST]");
}

TEST(ChatTemplateTest, Llama3) {
  EXPECT_EQ(Render("llama3", {kU1}),
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(Render("llama3", {kSys, kU1}),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(Render("llama3", {kSys, kU1, kA1, kU2}),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Contents stripped; any order of roles.
  EXPECT_EQ(Render("llama3", {{"assistant", " \n a b \r\n"}}),
            "<|start_header_id|>assistant<|end_header_id|>\n\na b<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, RawJoinsContents) {
  EXPECT_EQ(Render("raw", {{"user", "The capital of X is"}}), "The capital of X is");
  EXPECT_EQ(Render("raw", {{"system", "a"}, {"user", "b"}, {"assistant", "c"}}), "a\nb\nc");
}

TEST(ChatTemplateTest, EndsWithAssistantHeader) {
  const std::vector<std::vector<ChatMessage>> convs = {
      {kU1}, {kSys, kU1}, {kU1, kA1, kU2}, {kSys, kU1, kA1, kU2}};
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"plain", "\n\nAssistant:"},
      {"llama2", " [/INST]"},
      {"llama3", "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"}};
  for (const auto& [name, header] : headers) {
    for (const auto& conv : convs) {
      const std::string out = Render(name, conv);
      EXPECT_TRUE(absl::EndsWith(out, header)) << name << ": " << out;
      // The first BOS is the tokenizer's, never rendered.
      EXPECT_FALSE(absl::StartsWith(out, "<s>")) << name;
      EXPECT_FALSE(absl::StartsWith(out, "<|begin_of_text|>")) << name;
    }
  }
}

TEST(ChatTemplateTest, UnknownTemplate) {
  ExpectError("chatml", {kU1},
              "unknown chat template \"chatml\" (supported: plain, llama2, llama3, raw)");
  ExpectError("", {kU1}, "unknown chat template \"\" (supported: plain, llama2, llama3, raw)");
}

TEST(ChatTemplateTest, CommonErrors) {
  for (const std::string& name : KnownChatTemplates()) {
    SCOPED_TRACE(name);
    ExpectError(name, {}, "messages is empty (at least 1 message is required)");
    ExpectError(name, {kU1, kA1, {"bot", "x"}},
                "messages[2].role must be one of system, user, assistant; got \"bot\"");
    ExpectError(name, {{"", "x"}},
                "messages[0].role must be one of system, user, assistant; got \"\"");
    ExpectError(name, {{"User", "x"}},
                "messages[0].role must be one of system, user, assistant; got \"User\"");
    // Roles are shown escaped and cut short.
    ExpectError(name, {{"us\xff\n", "x"}},
                "messages[0].role must be one of system, user, assistant; got \"us\\xff\\n\"");
    ExpectError(name, {{std::string(50, 'r'), "x"}},
                absl::StrCat("messages[0].role must be one of system, user, assistant; got \"",
                             std::string(40, 'r'), "...\""));
    ExpectError(name, {{"user", "ok \xff"}}, "messages[0].content is not valid UTF-8");
    ExpectError(name, {kU1, kA1, {"user", "\xc0\xaf"}},  // overlong '/'
                "messages[2].content is not valid UTF-8");
    ExpectError(name, {kU1, {"assistant", "\xed\xa0\x80"}},  // surrogate
                "messages[1].content is not valid UTF-8");
    // The first bad message wins.
    ExpectError(name, {{"user", "\xff"}, {"bot", "x"}}, "messages[0].content is not valid UTF-8");
  }
  // Valid multi-byte content passes.
  EXPECT_EQ(Render("plain", {{"user", "日本 \xf0\x9f\x98\x80"}}),
            "User: 日本 \xf0\x9f\x98\x80\n\nAssistant:");
}

TEST(ChatTemplateTest, Llama2OrderErrors) {
  const std::string rule =
      "llama2 requires user/assistant alternation after at most one leading system message, "
      "ending with a user message; ";
  ExpectError("llama2", {kA1},
              "messages[0].role: " + rule + "expected \"user\", got \"assistant\"");
  ExpectError("llama2", {kSys, kA1},
              "messages[1].role: " + rule + "expected \"user\", got \"assistant\"");
  ExpectError("llama2", {kU1, kU2},
              "messages[1].role: " + rule + "expected \"assistant\", got \"user\"");
  ExpectError("llama2", {kU1, kA1, kA1},
              "messages[2].role: " + rule + "expected \"user\", got \"assistant\"");
  ExpectError("llama2", {kSys, kSys, kU1},
              "messages[1].role: " + rule + "expected \"user\", got \"system\"");
  ExpectError("llama2", {kU1, kSys},
              "messages[1].role: " + rule + "expected \"assistant\", got \"system\"");
  ExpectError("llama2", {kU1, kA1, kSys},
              "messages[2].role: " + rule + "expected \"user\", got \"system\"");
  ExpectError("llama2", {kU1, kA1},
              "messages[1].role: " + rule + "the last message is \"assistant\"");
  ExpectError("llama2", {kSys, kU1, kA1},
              "messages[2].role: " + rule + "the last message is \"assistant\"");
  ExpectError("llama2", {kSys},
              "messages[0].role: " + rule + "a system message alone has no user turn");
  // The same orders are fine for the other templates.
  for (const char* name : {"plain", "llama3"}) {
    EXPECT_TRUE(RenderChat(name, std::vector<ChatMessage>{kU1, kA1}).ok()) << name;
    EXPECT_TRUE(RenderChat(name, std::vector<ChatMessage>{kSys}).ok()) << name;
    EXPECT_TRUE(RenderChat(name, std::vector<ChatMessage>{kU1, kSys, kU2, kU2}).ok()) << name;
  }
}

}  // namespace
}  // namespace memserve
