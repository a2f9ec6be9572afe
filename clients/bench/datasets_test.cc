#include "clients/bench/datasets.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace memserve {
namespace bench {
namespace {

using ::testing::HasSubstr;

// A bytes tokenizer: one token per byte, plus BOS.
absl::StatusOr<int> CountBytes(const std::string& text, bool add_bos) {
  return static_cast<int>(text.size()) + (add_bos ? 1 : 0);
}

TEST(ParseJsonlDatasetTest, PromptsWithAndWithoutExpectedLengths) {
  const auto e = ParseJsonlDataset(
      "{\"prompt\": \"a\"}\n\n{\"prompt\": \"bb\", \"output_tokens\": 7}\n"
      "{\"prompt\": \"c\", \"answer\": \"xyz\", \"other\": 1}\n");
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 3u);
  EXPECT_EQ((*e)[0].prompt, "a");
  EXPECT_FALSE((*e)[0].output_tokens);
  EXPECT_FALSE((*e)[0].reference_output);
  EXPECT_EQ((*e)[1].output_tokens, 7);
  EXPECT_EQ((*e)[2].reference_output, "xyz");
  EXPECT_EQ((*e)[2].extra_output_tokens, 0);
}

TEST(ParseJsonlDatasetTest, ErrorsNameTheLine) {
  EXPECT_THAT(ParseJsonlDataset("{\"prompt\": \"a\"}\nnot json\n").status().message(),
              HasSubstr("line 2 is not a JSON object"));
  EXPECT_THAT(ParseJsonlDataset("{\"text\": \"a\"}").status().message(),
              HasSubstr("line 1 has no string \"prompt\""));
  EXPECT_THAT(ParseJsonlDataset("{\"prompt\": \"a\", \"output_tokens\": 0}").status().message(),
              HasSubstr("line 1: \"output_tokens\" must be an integer in [1, 1073741824]"));
  EXPECT_THAT(ParseJsonlDataset("\n \n").status().message(), HasSubstr("no prompts"));
}

TEST(ParseDemoFactsTest, AnswerPlusEosIsTheExpectedOutput) {
  const auto e = ParseDemoFacts(
      "{\"prompt\": \"The capital of Batourkor is\", \"answer\": \" Draenddron.\", "
      "\"relation\": \"capital\", \"entity\": \"Batourkor\"}\n");
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 1u);
  EXPECT_EQ((*e)[0].prompt, "The capital of Batourkor is");
  EXPECT_EQ((*e)[0].reference_output, " Draenddron.");
  EXPECT_EQ((*e)[0].extra_output_tokens, 1);
  EXPECT_THAT(ParseDemoFacts("{\"prompt\": \"p\"}").status().message(),
              HasSubstr("line 1 has no string \"answer\""));
}

TEST(ParseShareGptDatasetTest, FirstUserTurnAndTheReplyAfterIt) {
  const auto e = ParseShareGptDataset(R"([
    {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there"}]},
    {"id": "b", "conversations": [{"from": "system", "value": "be brief"}, {"from": "user", "value": "q"},
                                  {"from": "assistant", "value": "r"}, {"from": "human", "value": "later"}]},
    {"id": "c", "conversations": [{"from": "human", "value": "no reply"}]},
    {"id": "d", "conversations": []}
  ])");
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ((*e)[0].prompt, "hi");
  EXPECT_EQ((*e)[0].reference_output, "hello there");
  EXPECT_EQ((*e)[1].prompt, "q");
  EXPECT_EQ((*e)[1].reference_output, "r");
}

TEST(ParseShareGptDatasetTest, Errors) {
  EXPECT_THAT(ParseShareGptDataset("{}").status().message(), HasSubstr("not a JSON array"));
  EXPECT_THAT(ParseShareGptDataset("[{\"id\": 1}]").status().message(),
              HasSubstr("element 0 has no \"conversations\" array"));
  EXPECT_THAT(ParseShareGptDataset("[{\"conversations\": []}]").status().message(),
              HasSubstr("no conversation with a user turn"));
}

TEST(MakeRandomDatasetTest, LengthsInRangeBosFirstNoSpecialIdsInside) {
  RandomDatasetOptions o;
  o.count = 500;
  o.input_len = 20;
  o.output_len = 10;
  o.range_ratio = 0.5;
  o.seed = 5;
  o.vocab_size = 258;
  o.bos_id = 256;
  o.eos_id = 257;
  const std::vector<DatasetEntry> e = MakeRandomDataset(o);
  ASSERT_EQ(e.size(), 500u);
  std::set<size_t> input_lens;
  for (const DatasetEntry& d : e) {
    ASSERT_GE(d.prompt_ids.size(), 10u);
    ASSERT_LE(d.prompt_ids.size(), 30u);
    input_lens.insert(d.prompt_ids.size());
    ASSERT_EQ(d.prompt_ids[0], 256);
    for (size_t i = 1; i < d.prompt_ids.size(); ++i) {
      ASSERT_GE(d.prompt_ids[i], 0);
      ASSERT_LT(d.prompt_ids[i], 256);
    }
    ASSERT_TRUE(d.output_tokens);
    ASSERT_GE(*d.output_tokens, 5);
    ASSERT_LE(*d.output_tokens, 15);
  }
  EXPECT_EQ(input_lens.size(), 21u);  // every length of [10, 30] drawn
  o.range_ratio = 0;
  for (const DatasetEntry& d : MakeRandomDataset(o)) {
    ASSERT_EQ(d.prompt_ids.size(), 20u);
    ASSERT_EQ(d.output_tokens, 10);
  }
}

TEST(PrepareRequestsTest, ExpectedLengthsFromTheDatasetOrTheOverride) {
  std::vector<DatasetEntry> entries(3);
  entries[0].prompt = "aaaa";  // 5 tokens with BOS
  entries[0].reference_output = "xyz";
  entries[0].extra_output_tokens = 1;
  entries[1].prompt = "bb";
  entries[1].output_tokens = 6;
  entries[2].prompt = "c";  // no expected length: the server's default
  PrepareOptions o;
  o.num_prompts = 3;
  o.max_seqlen = 100;
  PrepareReport report;
  auto r = PrepareRequests(entries, o, CountBytes, &report);
  ASSERT_TRUE(r.ok()) << r.status();
  std::map<std::string, BenchRequest> by_prompt;
  for (const BenchRequest& b : *r) by_prompt[b.prompt] = b;
  ASSERT_EQ(by_prompt.size(), 3u);  // one pass draws each entry once
  EXPECT_EQ(by_prompt["aaaa"].prompt_tokens, 5);
  EXPECT_EQ(by_prompt["aaaa"].max_tokens, 4);  // 3 answer tokens + EOS
  EXPECT_EQ(by_prompt["bb"].max_tokens, 6);
  EXPECT_FALSE(by_prompt["c"].max_tokens);
  EXPECT_EQ(report.skipped, 0);
  EXPECT_EQ(report.clipped, 0);

  o.output_len = 9;
  r = PrepareRequests(entries, o, CountBytes, &report);
  ASSERT_TRUE(r.ok());
  for (const BenchRequest& b : *r) EXPECT_EQ(b.max_tokens, 9);
}

TEST(PrepareRequestsTest, CyclesSkipsWhatCannotFitAndClipsMaxTokens) {
  std::vector<DatasetEntry> entries(3);
  entries[0].prompt = std::string(9, 'a');  // 10 tokens: no room in a 10-token context
  entries[1].prompt = "bbb";                // 4 tokens, 6 left
  entries[1].output_tokens = 8;             // clipped to 6
  entries[2].prompt_ids = {1, 2};
  entries[2].output_tokens = 3;
  PrepareOptions o;
  o.num_prompts = 10;
  o.max_seqlen = 10;
  o.seed = 1;
  PrepareReport report;
  const auto r = PrepareRequests(entries, o, CountBytes, &report);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 10u);
  int bbb = 0;
  for (const BenchRequest& b : *r) {
    if (b.prompt == "bbb") {
      ++bbb;
      EXPECT_EQ(b.prompt_tokens, 4);
      EXPECT_EQ(b.max_tokens, 6);
    } else {
      EXPECT_EQ(b.prompt_ids, (std::vector<int32_t>{1, 2}));
      EXPECT_EQ(b.prompt_tokens, 2);
      EXPECT_EQ(b.max_tokens, 3);
    }
  }
  EXPECT_EQ(report.clipped, bbb);
  EXPECT_GE(report.skipped, 4);  // once per pass of 3 draws, 5 passes at least
  // Same seed, same order.
  PrepareReport again;
  const auto r2 = PrepareRequests(entries, o, CountBytes, &again);
  ASSERT_TRUE(r2.ok());
  for (size_t i = 0; i < r->size(); ++i) EXPECT_EQ((*r)[i].prompt, (*r2)[i].prompt);
}

TEST(PrepareRequestsTest, NothingFitsNamesTheContext) {
  std::vector<DatasetEntry> entries(2);
  entries[0].prompt = "long enough";
  entries[1].prompt = "also long";
  PrepareOptions o;
  o.num_prompts = 1;
  o.max_seqlen = 4;
  PrepareReport report;
  EXPECT_THAT(PrepareRequests(entries, o, CountBytes, &report).status().message(),
              HasSubstr("no prompt of the dataset leaves room to generate in the model's "
                        "context (max_seqlen 4 tokens)"));
}

TEST(PrepareRequestsTest, CounterErrorsComeBackAsTheyAre) {
  std::vector<DatasetEntry> entries(1);
  entries[0].prompt = "x";
  PrepareOptions o;
  o.num_prompts = 1;
  o.max_seqlen = 10;
  PrepareReport report;
  const auto r = PrepareRequests(
      entries, o,
      [](const std::string&, bool) -> absl::StatusOr<int> {
        return absl::UnavailableError("no server");
      },
      &report);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace bench
}  // namespace memserve
