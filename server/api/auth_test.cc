#include "server/api/auth.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Hex(const Sha256Digest& d) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

TEST(Sha256Test, KnownVectors) {  // FIPS 180-2 examples
  EXPECT_EQ(Hex(Sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex(Sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(ApiKeysTest, PlainAndHashedKeys) {
  const std::string contents = absl::StrCat(
      "# comment\n\n  plain-key-1  \n   # indented comment\nsha256:", Hex(Sha256("hashed-key-2")),
      "\n");
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(contents, "--api_keys_file", "k.txt");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_EQ(keys->Check("Bearer plain-key-1"), std::nullopt);
  EXPECT_EQ(keys->Check("bearer hashed-key-2"), std::nullopt);
  EXPECT_EQ(keys->Check("Bearer plain-key"), ApiKeys::Failure::kInvalid);
  EXPECT_EQ(keys->Check("plain-key-1"), ApiKeys::Failure::kInvalid);  // no scheme
  // The hash itself is not a key.
  EXPECT_EQ(keys->Check(absl::StrCat("Bearer sha256:", Hex(Sha256("hashed-key-2")))),
            ApiKeys::Failure::kInvalid);
  EXPECT_EQ(keys->Check(std::nullopt), ApiKeys::Failure::kMissing);
  EXPECT_EQ(keys->Check(""), ApiKeys::Failure::kMissing);
  EXPECT_EQ(keys->Check("Bearer "), ApiKeys::Failure::kMissing);
}

TEST(ApiKeysTest, BadFilesNameTheFlagFileAndLine) {
  absl::Status s = ApiKeys::Parse("# only a comment\n\n", "--api_keys_file", "k.txt").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--api_keys_file k.txt: no keys"));

  s = ApiKeys::Parse("good\nsha256:abcd\n", "--api_keys_file", "k.txt").status();
  EXPECT_THAT(s.message(), HasSubstr("--api_keys_file k.txt:2: a hashed key"));

  s = ApiKeys::Parse("good\n\nsecret with space\n", "--api_keys_file", "k.txt").status();
  EXPECT_THAT(s.message(), HasSubstr("--api_keys_file k.txt:3: a key is printable ASCII"));
  EXPECT_THAT(s.message(), Not(HasSubstr("secret")));

  s = ApiKeys::Load("/nonexistent/keys", "--api_keys_file").status();
  EXPECT_THAT(s.message(), HasSubstr("--api_keys_file /nonexistent/keys: cannot read"));
}

TEST(ApiKeysTest, ErrorsAreUnauthenticatedWithoutTheKey) {
  EXPECT_EQ(ApiKeys::Error(ApiKeys::Failure::kMissing).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ApiKeys::Error(ApiKeys::Failure::kInvalid).code(), absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace memserve
