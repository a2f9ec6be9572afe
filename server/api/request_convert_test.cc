// The shared request conversion names fields the way each transport's user
// spells them (gRPC: the proto paths; HTTP: OpenAI's names) with the same
// rule and limit, and the error table maps every code once.
#include "server/api/request_convert.h"

#include <memory>

#include "engine/config.h"
#include "engine/tokenizer.h"
#include "gtest/gtest.h"
#include "server/api/errors.h"

namespace memserve {
namespace {

class RequestConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.vocab_size = 258;
    config_.max_seqlen = 128;
    TokenizerConfig t;
    t.kind = "bytes";
    t.bos_id = 256;
    t.eos_id = 257;
    auto tokenizer = Tokenizer::Create(t, "");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
    options_.chat_template = "raw";
  }

  absl::Status Error(const v1::GenerateRequest& r, const ApiFieldNames& names) {
    return ToEngineRequest(r, *tokenizer_, config_, options_, names).status();
  }

  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ConvertOptions options_;
};

TEST_F(RequestConvertTest, SameRuleNamedPerTransport) {
  v1::GenerateRequest r;
  r.set_text("Hi");
  r.mutable_sampling()->set_top_p(0);
  EXPECT_EQ(Error(r, {}).message(), "sampling.top_p must be in (0, 1], got 0");
  EXPECT_EQ(Error(r, HttpFieldNames()).message(), "top_p must be in (0, 1], got 0");

  r.mutable_sampling()->clear_top_p();
  r.mutable_sampling()->set_max_tokens(126);
  EXPECT_EQ(Error(r, {}).message(),
            "text (3 tokens) + sampling.max_tokens (126) exceeds the model's context of 128 "
            "tokens (max_seqlen)");
  EXPECT_EQ(Error(r, HttpFieldNames()).message(),
            "prompt (3 tokens) + max_tokens (126) exceeds the model's context of 128 tokens "
            "(max_seqlen)");

  v1::GenerateRequest ids;
  ids.mutable_token_ids()->add_ids(300);
  EXPECT_EQ(Error(ids, {}).message(), "token_ids[0] = 300 is outside the vocabulary [0, 258)");
  EXPECT_EQ(Error(ids, HttpFieldNames()).message(),
            "prompt[0] = 300 is outside the vocabulary [0, 258)");

  v1::GenerateRequest none;
  EXPECT_EQ(Error(none, {}).message(), "input: set exactly one of text and token_ids");
  EXPECT_EQ(Error(none, HttpFieldNames()).message(), "prompt is required");

  v1::GenerateRequest bad_id;
  bad_id.set_text("Hi");
  bad_id.set_request_id("a b");
  EXPECT_EQ(Error(bad_id, {}).message(),
            "request_id must be printable ASCII without spaces; byte 1 is 0x20");
  EXPECT_EQ(Error(bad_id, HttpFieldNames()).message(),
            "X-Request-Id must be printable ASCII without spaces; byte 1 is 0x20");
}

TEST_F(RequestConvertTest, ChatRendersWithTheTemplate) {
  v1::ChatRequest r;
  v1::ChatMessage* m = r.add_messages();
  m->set_role("user");
  m->set_content("Hi");
  absl::StatusOr<EngineRequest> out =
      ToEngineRequest(r, *tokenizer_, config_, options_, HttpFieldNames());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->prompt, (std::vector<int>{256, 'H', 'i'}));
  EXPECT_EQ(out->options.max_tokens, 125);  // min(default 256, context left)
  m->set_role("bot");
  EXPECT_EQ(ToEngineRequest(r, *tokenizer_, config_, options_, HttpFieldNames()).status().message(),
            "messages[0].role must be one of system, user, assistant; got \"bot\"");
}

TEST(ErrorsTest, OneTable) {
  EXPECT_EQ(ToHttpError(absl::StatusCode::kInvalidArgument).status, 400);
  EXPECT_STREQ(ToHttpError(absl::StatusCode::kInvalidArgument).type, "invalid_request_error");
  EXPECT_EQ(ToHttpError(absl::StatusCode::kNotFound).status, 404);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kResourceExhausted).status, 429);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kUnavailable).status, 503);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kDeadlineExceeded).status, 504);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kDataLoss).status, 500);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kInternal).status, 500);
  const grpc::Status g = ToGrpcStatus(absl::ResourceExhaustedError("full"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(g.error_message(), "full");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace memserve
