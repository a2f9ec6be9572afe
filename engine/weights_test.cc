#include "engine/weights.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/testing/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testutil::MakeIotaTensor;
using testutil::MakeTempDir;
using testutil::MakeTensor;
using testutil::SerializeSafetensors;
using testutil::TestTensor;
using testutil::WriteFile;

std::vector<float> ToF32(const TensorView& v) {
  std::vector<float> out(static_cast<size_t>(v.numel()));
  ConvertToF32(v.dtype, v.data, out.size(), out.data());
  return out;
}

std::vector<TestTensor> SmallModel() {
  return {
      MakeIotaTensor("tok_embeddings.weight", DType::kF32, {4, 3}, 0.0f, 0.5f),
      MakeTensor("norm.weight", DType::kF32, {3}, {1.0f, -2.0f, 3.5f}),
      MakeTensor("memory.values.weight", DType::kBF16, {2, 3},
                 {1.0f, 1.5f, -0.25f, 3.0f, 1024.0f, 0.0f}),
      MakeTensor("layers.0.odd", DType::kBF16, {1}, {7.0f}),  // 2 bytes, last: no F32 follows it
  };
}

TEST(TensorViewTest, Numel) {
  TensorView v;
  EXPECT_EQ(v.numel(), 1);  // a scalar
  v.shape = {2, 3, 4};
  EXPECT_EQ(v.numel(), 24);
  v.dtype = DType::kBF16;
  EXPECT_EQ(v.nbytes(), 48u);
  v.shape = {0, 7};
  EXPECT_EQ(v.numel(), 0);
}

TEST(SafetensorsFileTest, RoundTrip) {
  const std::string dir = MakeTempDir("st_roundtrip");
  const std::string path = dir + "/a.safetensors";
  ASSERT_TRUE(WriteFile(path, SerializeSafetensors(SmallModel(), {{"format", "pt"}})).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->path(), path);
  const auto& t = (*f)->tensors();
  ASSERT_EQ(t.size(), 4u);
  const TensorView& emb = t.at("tok_embeddings.weight");
  EXPECT_EQ(emb.name, "tok_embeddings.weight");
  EXPECT_EQ(emb.dtype, DType::kF32);
  EXPECT_THAT(emb.shape, ElementsAre(4, 3));
  EXPECT_EQ(emb.nbytes(), 48u);
  EXPECT_EQ(ToF32(emb)[5], 2.5f);
  const TensorView& vals = t.at("memory.values.weight");
  EXPECT_EQ(vals.dtype, DType::kBF16);
  EXPECT_THAT(ToF32(vals), ElementsAre(1.0f, 1.5f, -0.25f, 3.0f, 1024.0f, 0.0f));
  EXPECT_THAT(ToF32(t.at("norm.weight")), ElementsAre(1.0f, -2.0f, 3.5f));
  // Views point into the mapping, aligned.
  const auto map = (*f)->mapping();
  for (const auto& kv : t) {
    const uint8_t* p = static_cast<const uint8_t*>(kv.second.data);
    EXPECT_GE(p, map.data());
    EXPECT_LE(p + kv.second.nbytes(), map.data() + map.size());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % DTypeSize(kv.second.dtype), 0u);
  }
}

TEST(SafetensorsFileTest, EmptyAndScalarTensors) {
  const std::string dir = MakeTempDir("st_empty");
  const std::string path = dir + "/a.safetensors";
  ASSERT_TRUE(
      WriteFile(path, SerializeSafetensors({MakeTensor("empty", DType::kF32, {0, 5}, {}),
                                            MakeTensor("scalar", DType::kF32, {}, {42.0f})}))
          .ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().at("empty").numel(), 0);
  EXPECT_EQ(ToF32((*f)->tensors().at("scalar"))[0], 42.0f);
}

TEST(SafetensorsFileTest, NoTensors) {
  const std::string dir = MakeTempDir("st_none");
  ASSERT_TRUE(WriteFile(dir + "/a.safetensors", SerializeSafetensors({})).ok());
  auto f = SafetensorsFile::Open(dir + "/a.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->tensors().empty());
}

TEST(SafetensorsFileTest, MissingFileIsNotFound) {
  auto f = SafetensorsFile::Open("/nonexistent/dir/x.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("/nonexistent/dir/x.safetensors"));
}

TEST(SafetensorsFileTest, DirectoryIsRejected) {
  const std::string dir = MakeTempDir("st_dir");
  auto f = SafetensorsFile::Open(dir);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("not a regular file"));
}

class WeightStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("ws"); }
  void Write(const std::string& name, const std::string& contents) {
    ASSERT_TRUE(WriteFile(dir_ + "/" + name, contents).ok());
  }
  std::string dir_;
};

TEST_F(WeightStoreTest, SingleFile) {
  Write("model.safetensors", SerializeSafetensors(SmallModel()));
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->Has("norm.weight"));
  EXPECT_FALSE((*store)->Has("nope"));
  EXPECT_THAT((*store)->Names(), ElementsAre("layers.0.odd", "memory.values.weight", "norm.weight",
                                             "tok_embeddings.weight"));
  auto v = (*store)->Get("tok_embeddings.weight", {4, 3});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(ToF32(*v)[11], 5.5f);
}

TEST_F(WeightStoreTest, ShapeMismatchNamesFileTensorAndShapes) {
  Write("model.safetensors", SerializeSafetensors(SmallModel()));
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  auto v = (*store)->Get("tok_embeddings.weight", {3, 4});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(v.status().message(), HasSubstr(dir_ + "/model.safetensors"));
  EXPECT_THAT(v.status().message(), HasSubstr("'tok_embeddings.weight'"));
  EXPECT_THAT(v.status().message(), HasSubstr("expected shape [3, 4], found [4, 3]"));
  // Rank mismatch too.
  EXPECT_FALSE((*store)->Get("tok_embeddings.weight", {12}).ok());
}

TEST_F(WeightStoreTest, MissingTensorIsNotFound) {
  Write("model.safetensors", SerializeSafetensors(SmallModel()));
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  auto v = (*store)->Get("output.weight", {4, 3});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(v.status().message(), HasSubstr("'output.weight' not found (expected shape [4, 3])"));
}

TEST_F(WeightStoreTest, EmptyDirIsNotFound) {
  auto store = WeightStore::Open(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(store.status().message(), HasSubstr(dir_));
}

TEST_F(WeightStoreTest, CorruptFileErrorNamesPath) {
  Write("model.safetensors", "garbage!garbage!");
  auto store = WeightStore::Open(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(store.status().message(), HasSubstr(dir_ + "/model.safetensors: "));
}

TEST_F(WeightStoreTest, BothLayoutsIsAnError) {
  Write("model.safetensors", SerializeSafetensors(SmallModel()));
  Write("model.safetensors.index.json", R"({"weight_map": {}})");
  auto store = WeightStore::Open(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr("both"));
}

std::vector<TestTensor> Shard1() {
  return {MakeIotaTensor("a", DType::kF32, {2, 2}), MakeIotaTensor("b", DType::kBF16, {3})};
}
std::vector<TestTensor> Shard2() {
  return {MakeIotaTensor("c", DType::kF32, {5}, 10.0f),
          MakeIotaTensor("memory.values.weight", DType::kBF16, {4, 2})};
}

TEST_F(WeightStoreTest, Shards) {
  Write("model-00001-of-00002.safetensors", SerializeSafetensors(Shard1()));
  Write("model-00002-of-00002.safetensors", SerializeSafetensors(Shard2()));
  Write("model.safetensors.index.json", R"({"metadata": {"total_size": 60}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors", "memory.values.weight": "model-00002-of-00002.safetensors"}})");
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Names(), ElementsAre("a", "b", "c", "memory.values.weight"));
  auto c = (*store)->Get("c", {5});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(ToF32(*c)[4], 14.0f);
  auto bad = (*store)->Get("memory.values.weight", {2, 4});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("model-00002-of-00002.safetensors"));
}

TEST_F(WeightStoreTest, DuplicateAcrossShards) {
  Write("s1.safetensors", SerializeSafetensors(Shard1()));
  Write("s2.safetensors", SerializeSafetensors({MakeIotaTensor("a", DType::kF32, {2, 2})}));
  Write("model.safetensors.index.json",
        R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  auto store = WeightStore::Open(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(store.status().message(), HasSubstr("'a' appears in both"));
}

TEST_F(WeightStoreTest, IndexPointsAtWrongShard) {
  Write("s1.safetensors", SerializeSafetensors(Shard1()));
  Write("s2.safetensors", SerializeSafetensors(Shard2()));
  Write("model.safetensors.index.json",
        R"({"weight_map": {"a": "s2.safetensors", "b": "s1.safetensors", "c": "s2.safetensors",
            "memory.values.weight": "s2.safetensors"}})");
  auto store = WeightStore::Open(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr("'a' is mapped to " + dir_ + "/s2.safetensors"));
}

TEST_F(WeightStoreTest, ShardTensorMissingFromIndex) {
  Write("s1.safetensors", SerializeSafetensors(Shard1()));
  Write("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors"}})");
  auto store = WeightStore::Open(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr("'b' is not listed in"));
}

TEST_F(WeightStoreTest, MissingShardIsNotFoundAndNamed) {
  Write("s1.safetensors", SerializeSafetensors(Shard1()));
  Write(
      "model.safetensors.index.json",
      R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "gone.safetensors"}})");
  auto store = WeightStore::Open(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(store.status().message(), HasSubstr(dir_ + "/gone.safetensors"));
  // ... and the index and the tensor that points at it.
  EXPECT_THAT(store.status().message(),
              HasSubstr("model.safetensors.index.json: tensor 'c' is mapped to " + dir_ +
                        "/gone.safetensors: no such file"));
}

TEST_F(WeightStoreTest, BadIndex) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {R"({"weight_map": []})", "\"weight_map\" must be an object"},
      {R"({"weight_map": {"a": 3}})", "must be a file name"},
      {R"({"weight_map": {"a": "../x.safetensors"}})", "plain file name"},
      {R"({"weight_map": {"a": "s.safetensors", "a": "s.safetensors"}})", "duplicate key"},
  };
  for (const auto& c : cases) {
    Write("model.safetensors.index.json", c.first);
    auto store = WeightStore::Open(dir_);
    ASSERT_FALSE(store.ok()) << c.first;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << c.first;
    EXPECT_THAT(store.status().message(), HasSubstr("model.safetensors.index.json")) << c.first;
    EXPECT_THAT(store.status().message(), HasSubstr(c.second)) << c.first;
  }
}

}  // namespace
}  // namespace memserve
