#include "engine/config.h"

#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/testing/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

json ValidConfig() {
  return json::parse(R"({
    "format": "memserve-llama-pk", "format_version": 1,
    "dim": 64, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16,
    "ffn_hidden_dim": 256, "vocab_size": 258, "max_seqlen": 512,
    "norm_eps": 1e-6, "rope_theta": 500000.0, "sliding_window": 0,
    "memory": {"layers": [3, 1], "n_keys": 32, "heads": 4, "knn": 8, "k_dim": 32, "v_dim": 64,
               "share_values": true, "swilu_projection": true, "value_proj": true, "gated": false},
    "tokenizer": {"kind": "bytes", "file": "", "bos_id": 256, "eos_id": 257},
    "chat_template": "plain",
    "source": {"params": {"anything": [1, 2, {"x": null}]}},
    "some_future_key": 17
  })");
}

absl::StatusOr<ModelConfig> Parse(const json& j) { return ModelConfig::FromJson(j.dump()); }

TEST(ConfigTest, Valid) {
  auto cfg = Parse(ValidConfig());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->dim, 64);
  EXPECT_EQ(cfg->n_layers, 4);
  EXPECT_EQ(cfg->n_heads, 4);
  EXPECT_EQ(cfg->n_kv_heads, 2);
  EXPECT_EQ(cfg->head_dim, 16);
  EXPECT_EQ(cfg->ffn_hidden_dim, 256);
  EXPECT_EQ(cfg->vocab_size, 258);
  EXPECT_EQ(cfg->max_seqlen, 512);
  EXPECT_FLOAT_EQ(cfg->norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(cfg->rope_theta, 500000.0f);
  EXPECT_EQ(cfg->sliding_window, 0);
  EXPECT_THAT(cfg->memory.layers, ElementsAre(1, 3));  // sorted
  EXPECT_EQ(cfg->memory.n_keys, 32);
  EXPECT_EQ(cfg->memory.rows(), 1024);
  EXPECT_EQ(cfg->memory.heads, 4);
  EXPECT_EQ(cfg->memory.knn, 8);
  EXPECT_EQ(cfg->memory.k_dim, 32);
  EXPECT_EQ(cfg->memory.v_dim, 64);
  EXPECT_TRUE(cfg->memory.share_values);
  EXPECT_TRUE(cfg->memory.swilu_projection);
  EXPECT_TRUE(cfg->memory.value_proj);
  EXPECT_FALSE(cfg->memory.gated);
  EXPECT_TRUE(cfg->IsMemoryLayer(1));
  EXPECT_FALSE(cfg->IsMemoryLayer(2));
  EXPECT_TRUE(cfg->IsMemoryLayer(3));
  EXPECT_FALSE(cfg->IsMemoryLayer(-1));
  EXPECT_EQ(cfg->tokenizer.kind, "bytes");
  EXPECT_EQ(cfg->tokenizer.bos_id, 256);
  EXPECT_EQ(cfg->tokenizer.eos_id, 257);
  EXPECT_EQ(cfg->chat_template, "plain");
}

TEST(ConfigTest, DefaultsForOptionalFields) {
  json j = ValidConfig();
  for (const char* k :
       {"n_kv_heads", "head_dim", "norm_eps", "rope_theta", "sliding_window", "chat_template"}) {
    j.erase(k);
  }
  j["memory"] = nullptr;
  j["tokenizer"] = {{"kind", "bytes"}};
  auto cfg = Parse(j);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->n_kv_heads, 4);
  EXPECT_EQ(cfg->head_dim, 16);
  EXPECT_FLOAT_EQ(cfg->norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(cfg->rope_theta, 10000.0f);
  EXPECT_TRUE(cfg->memory.layers.empty());
  EXPECT_FALSE(cfg->IsMemoryLayer(0));
  EXPECT_EQ(cfg->tokenizer.bos_id, 256);
  EXPECT_EQ(cfg->tokenizer.eos_id, 257);
}

TEST(ConfigTest, HeadDimNeedNotDivideDim) {
  json j = ValidConfig();
  j["dim"] = 60;
  j["head_dim"] = 32;
  j["memory"]["v_dim"] = -1;  // -1 = dim
  auto cfg = Parse(j);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->head_dim, 32);
  EXPECT_EQ(cfg->memory.v_dim, 60);
}

TEST(ConfigTest, AllMemoryModelNeedsNoFfn) {
  json j = ValidConfig();
  j["memory"]["layers"] = {0, 1, 2, 3};
  j.erase("ffn_hidden_dim");
  EXPECT_TRUE(Parse(j).ok());
  j["memory"]["layers"] = {0, 1, 2};
  auto cfg = Parse(j);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.status().message(), HasSubstr("\"ffn_hidden_dim\": is required"));
}

TEST(ConfigTest, SentencePieceTokenizer) {
  json j = ValidConfig();
  j["vocab_size"] = 32000;
  j["tokenizer"] = {{"kind", "sp"}, {"file", "tokenizer.model"}, {"bos_id", 1}, {"eos_id", 2}};
  auto cfg = Parse(j);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->tokenizer.file, "tokenizer.model");
  EXPECT_EQ(cfg->tokenizer.bos_id, 1);
}

struct BadCase {
  std::string name;
  std::function<void(json&)> mutate;
  std::string want;  // substring of the message
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;
};

TEST(ConfigTest, InvalidFieldsAreNamed) {
  const std::vector<BadCase> cases = {
      {"format", [](json& j) { j["format"] = "llama"; }, "\"format\": unknown format \"llama\""},
      {"no format", [](json& j) { j.erase("format"); }, "\"format\": is required"},
      {"version", [](json& j) { j["format_version"] = 2; },
       "\"format_version\": unsupported version 2"},
      {"version type", [](json& j) { j["format_version"] = "1"; },
       "\"format_version\": must be an integer, got a string \"1\""},
      {"dim zero", [](json& j) { j["dim"] = 0; }, "\"dim\": 0 is out of range [1, 65536]"},
      {"dim string", [](json& j) { j["dim"] = "64"; },
       "\"dim\": must be an integer, got a string \"64\""},
      {"dim float", [](json& j) { j["dim"] = 64.0; }, "\"dim\": must be an integer, got a number"},
      {"dim bool", [](json& j) { j["dim"] = true; }, "\"dim\": must be an integer, got a boolean"},
      {"dim huge", [](json& j) { j["dim"] = 18446744073709551615ull; },
       "\"dim\": 18446744073709551615 is too large"},
      {"dim missing", [](json& j) { j.erase("dim"); }, "\"dim\": is required"},
      {"n_layers", [](json& j) { j["n_layers"] = -1; }, "\"n_layers\": -1 is out of range"},
      {"n_heads", [](json& j) { j["n_heads"] = 0; }, "\"n_heads\": 0 is out of range"},
      {"n_kv_heads > n_heads", [](json& j) { j["n_kv_heads"] = 8; },
       "\"n_kv_heads\": 8 is out of range [1, 4]"},
      {"n_kv_heads divides", [](json& j) { j["n_kv_heads"] = 3; },
       "\"n_kv_heads\": 3 does not divide n_heads=4"},
      {"dim % n_heads",
       [](json& j) {
         j["dim"] = 66;
         j.erase("head_dim");
       },
       "\"n_heads\": 4 does not divide dim=66"},
      {"head_dim odd", [](json& j) { j["head_dim"] = 15; }, "\"head_dim\": 15 must be even"},
      {"head_dim negative", [](json& j) { j["head_dim"] = -2; },
       "\"head_dim\": -2 is out of range"},
      {"ffn", [](json& j) { j["ffn_hidden_dim"] = 0; }, "\"ffn_hidden_dim\": 0 is out of range"},
      {"vocab", [](json& j) { j["vocab_size"] = 0; }, "\"vocab_size\": 0 is out of range"},
      {"max_seqlen", [](json& j) { j["max_seqlen"] = 0; }, "\"max_seqlen\": 0 is out of range"},
      {"norm_eps", [](json& j) { j["norm_eps"] = 0; }, "\"norm_eps\": 0 is out of range (0, 1)"},
      {"norm_eps type", [](json& j) { j["norm_eps"] = "1e-5"; }, "\"norm_eps\": must be a number"},
      {"rope_theta", [](json& j) { j["rope_theta"] = -1.0; },
       "\"rope_theta\": -1.0 is out of range"},
      {"sliding_window", [](json& j) { j["sliding_window"] = -5; },
       "\"sliding_window\": -5 is out of range"},
      {"memory type", [](json& j) { j["memory"] = 3; }, "\"memory\": must be an object or null"},
      {"memory layers missing", [](json& j) { j["memory"].erase("layers"); },
       "\"memory.layers\": is required"},
      {"memory layers type", [](json& j) { j["memory"]["layers"] = "1,3"; },
       "\"memory.layers\": must be a list of integers"},
      {"memory layer range",
       [](json& j) {
         j["memory"]["layers"] = {1, 4};
       },
       "\"memory.layers[1]\": layer 4 is out of range [0, n_layers=4)"},
      {"memory layer negative", [](json& j) { j["memory"]["layers"] = {-1}; },
       "\"memory.layers[0]\": layer -1"},
      {"memory layer type",
       [](json& j) {
         j["memory"]["layers"] = {1, "3"};
       },
       "\"memory.layers[1]\": must be an integer"},
      {"memory layer dup",
       [](json& j) {
         j["memory"]["layers"] = {3, 1, 3};
       },
       "\"memory.layers\": layer 3 is listed twice"},
      {"n_keys", [](json& j) { j["memory"]["n_keys"] = 0; },
       "\"memory.n_keys\": 0 is out of range"},
      {"n_keys rows", [](json& j) { j["memory"]["n_keys"] = 65536; },
       "\"memory.n_keys\": 65536 is out of range [1, 46340]"},
      {"n_keys missing", [](json& j) { j["memory"].erase("n_keys"); },
       "\"memory.n_keys\": is required"},
      {"heads", [](json& j) { j["memory"]["heads"] = 0; }, "\"memory.heads\": 0 is out of range"},
      // The training code's HashingMemory asserts mem_heads >= 2.
      {"one memory head", [](json& j) { j["memory"]["heads"] = 1; },
       "\"memory.heads\": 1 is below 2"},
      {"knn > n_keys", [](json& j) { j["memory"]["knn"] = 33; },
       "\"memory.knn\": 33 exceeds memory.n_keys=32"},
      {"knn", [](json& j) { j["memory"]["knn"] = 0; }, "\"memory.knn\": 0 is out of range"},
      {"k_dim odd", [](json& j) { j["memory"]["k_dim"] = 33; },
       "\"memory.k_dim\": 33 must be even"},
      {"v_dim", [](json& j) { j["memory"]["v_dim"] = 0; }, "\"memory.v_dim\": 0 is out of range"},
      {"value_proj", [](json& j) { j["memory"]["value_proj"] = false; },
       "\"memory.value_proj\": must be true when memory.swilu_projection is true"},
      {"value_proj vdim",
       [](json& j) {
         j["memory"]["value_proj"] = false;
         j["memory"]["swilu_projection"] = false;
         j["memory"]["v_dim"] = 32;
       },
       "\"memory.value_proj\": must be true when memory.v_dim (32) != dim (64)"},
      {"gated type", [](json& j) { j["memory"]["gated"] = 1; },
       "\"memory.gated\": must be true or false"},
      {"peer", [](json& j) { j["memory"]["peer_variant"] = true; }, "\"memory.peer_variant\"",
       absl::StatusCode::kUnimplemented},
      {"tokenizer missing", [](json& j) { j.erase("tokenizer"); }, "\"tokenizer\": is required"},
      {"tokenizer type", [](json& j) { j["tokenizer"] = "bytes"; },
       "\"tokenizer\": must be an object"},
      {"tokenizer kind", [](json& j) { j["tokenizer"]["kind"] = "wordpiece"; },
       "\"tokenizer.kind\": unknown kind \"wordpiece\""},
      {"tokenizer kind type", [](json& j) { j["tokenizer"]["kind"] = 1; },
       "\"tokenizer.kind\": must be a string"},
      {"tiktoken", [](json& j) { j["tokenizer"]["kind"] = "tiktoken"; },
       "\"tokenizer.kind\": \"tiktoken\"", absl::StatusCode::kUnimplemented},
      {"bytes file", [](json& j) { j["tokenizer"]["file"] = "x.model"; },
       "\"tokenizer.file\": must be empty"},
      {"bytes bos", [](json& j) { j["tokenizer"]["bos_id"] = 1; },
       "\"tokenizer.bos_id\": 1 is out of range [256, 256]"},
      {"bytes vocab", [](json& j) { j["vocab_size"] = 100; },
       "\"vocab_size\": 100 is smaller than"},
      {"sp file",
       [](json& j) {
         j["tokenizer"] = {{"kind", "sp"}, {"bos_id", 1}, {"eos_id", 2}};
       },
       "\"tokenizer.file\": is required"},
      {"sp abs file",
       [](json& j) {
         j["tokenizer"] = {{"kind", "sp"}, {"file", "/x"}, {"bos_id", 1}, {"eos_id", 2}};
       },
       "\"tokenizer.file\": must be relative"},
      {"sp bos range",
       [](json& j) {
         j["tokenizer"] = {{"kind", "sp"}, {"file", "t.model"}, {"bos_id", 258}, {"eos_id", 2}};
       },
       "\"tokenizer.bos_id\": 258 is out of range [0, 257]"},
      {"sp eos missing",
       [](json& j) {
         j["tokenizer"] = {{"kind", "sp"}, {"file", "t.model"}, {"bos_id", 1}};
       },
       "\"tokenizer.eos_id\": is required"},
      {"chat_template", [](json& j) { j["chat_template"] = "chatml"; },
       "\"chat_template\": unknown template \"chatml\" (supported: plain, llama2, llama3, raw)"},
      {"chat_template case", [](json& j) { j["chat_template"] = "Llama3"; },
       "\"chat_template\": unknown template \"Llama3\""},
      {"chat_template empty", [](json& j) { j["chat_template"] = ""; },
       "\"chat_template\": unknown template \"\" (supported: plain, llama2, llama3, raw)"},
      {"chat_template type", [](json& j) { j["chat_template"] = 5; },
       "\"chat_template\": must be a string"},
  };
  for (const BadCase& c : cases) {
    json j = ValidConfig();
    c.mutate(j);
    auto cfg = Parse(j);
    ASSERT_FALSE(cfg.ok()) << c.name;
    EXPECT_EQ(cfg.status().code(), c.code) << c.name << ": " << cfg.status();
    EXPECT_THAT(std::string(cfg.status().message()), HasSubstr(c.want)) << c.name;
  }
}

TEST(ConfigTest, ChatTemplates) {
  for (const char* name : {"plain", "llama2", "llama3"}) {
    json j = ValidConfig();
    j["chat_template"] = name;
    auto cfg = Parse(j);
    ASSERT_TRUE(cfg.ok()) << name << ": " << cfg.status();
    EXPECT_EQ(cfg->chat_template, name);
  }
  json j = ValidConfig();
  j["chat_template"] = nullptr;  // null = absent = "plain"
  auto cfg = Parse(j);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->chat_template, "plain");
}

TEST(ConfigTest, NotJsonOrNotObject) {
  for (const char* text : {"", "{", "[]", "null", "{\"dim\": 1,}", "{\"a\":1,\"a\":2}", "\xff"}) {
    auto cfg = ModelConfig::FromJson(text);
    ASSERT_FALSE(cfg.ok()) << text;
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  auto dup = ModelConfig::FromJson(R"({"dim": 1, "dim": 2})");
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("duplicate key \"dim\""));
  auto syntax = ModelConfig::FromJson("{\"dim\": }");
  EXPECT_THAT(std::string(syntax.status().message()), HasSubstr("config is not valid JSON"));
  EXPECT_THAT(std::string(syntax.status().message()), HasSubstr("column"));
}

TEST(ConfigTest, LoadFromDir) {
  const std::string dir = testutil::MakeTempDir("cfg");
  auto missing = ModelConfig::LoadFromDir(dir);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(dir + " has no config.json"));

  ASSERT_TRUE(testutil::WriteFile(dir + "/config.json", ValidConfig().dump(2)).ok());
  auto cfg = ModelConfig::LoadFromDir(dir);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->dim, 64);

  json bad = ValidConfig();
  bad["n_heads"] = "four";
  ASSERT_TRUE(testutil::WriteFile(dir + "/config.json", bad.dump()).ok());
  auto err = ModelConfig::LoadFromDir(dir);
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(err.status().message()), HasSubstr(dir + "/config.json: "));
  EXPECT_THAT(std::string(err.status().message()), HasSubstr("\"n_heads\""));
}

// Without config.json, the error says what the directory is and, for a
// training checkpoint, the command that converts it.
TEST(ConfigTest, LoadFromDirExplainsWhatIsThere) {
  const std::string convert = "/usr/bin/python3 tools/convert_lingua.py ";
  auto message = [](const absl::StatusOr<ModelConfig>& c) {
    return std::string(c.status().message());
  };
  auto none = ModelConfig::LoadFromDir("/nonexistent/memserve/model");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(message(none), "/nonexistent/memserve/model: no such directory");

  const std::string empty = testutil::MakeTempDir("cfg_empty");
  auto no_config = ModelConfig::LoadFromDir(empty);
  EXPECT_EQ(no_config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(message(no_config), HasSubstr(empty + " has no config.json: not a serving"));
  EXPECT_THAT(message(no_config), HasSubstr(convert + "CKPT_DIR MODEL_DIR"));

  ASSERT_TRUE(testutil::WriteFile(empty + "/file", "x").ok());
  auto file = ModelConfig::LoadFromDir(empty + "/file");
  EXPECT_THAT(message(file), HasSubstr(empty + "/file: not a directory"));

  const std::string ckpt = testutil::MakeTempDir("cfg_ckpt");
  ASSERT_TRUE(testutil::WriteFile(ckpt + "/params.json", "{}").ok());
  auto unconsolidated = ModelConfig::LoadFromDir(ckpt);
  EXPECT_EQ(unconsolidated.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(message(unconsolidated), HasSubstr("without consolidated.pth"));

  ASSERT_TRUE(testutil::WriteFile(ckpt + "/consolidated.pth", "x").ok());
  auto training = ModelConfig::LoadFromDir(ckpt);
  EXPECT_EQ(training.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(message(training), HasSubstr(ckpt + " is a training checkpoint"));
  EXPECT_THAT(message(training), HasSubstr(convert + ckpt + " MODEL_DIR"));

  const std::string parent = testutil::MakeTempDir("cfg_parent");
  ASSERT_TRUE(testutil::WriteFile(parent + "/params.json", "{}").ok());
  std::filesystem::create_directory(parent + "/consolidated");
  ASSERT_TRUE(testutil::WriteFile(parent + "/consolidated/consolidated.pth", "x").ok());
  auto nested = ModelConfig::LoadFromDir(parent);
  EXPECT_THAT(message(nested), HasSubstr(convert + parent + "/consolidated MODEL_DIR"));
}

// No input makes FromJson throw or crash: random mutations of a valid text.
TEST(ConfigTest, RandomTextNeverThrows) {
  const std::string base = ValidConfig().dump();
  std::mt19937 rng(1);
  int ok = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string s = base;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) s[rng() % s.size()] = static_cast<char>(rng() % 256);
    auto cfg = ModelConfig::FromJson(s);
    ok += cfg.ok();
    if (!cfg.ok()) {
      EXPECT_FALSE(cfg.status().message().empty());
    }
  }
  std::printf("%d of 3000 mutated configs still valid\n", ok);
}

}  // namespace
}  // namespace memserve
