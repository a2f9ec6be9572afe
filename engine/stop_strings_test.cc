#include "engine/stop_strings.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace memserve {
namespace {

// Streams `text` in the given chunk sizes; returns emitted text.
std::string Stream(StopStringMatcher& m, const std::string& text, size_t chunk) {
  std::string out;
  for (size_t i = 0; i < text.size() && !m.stopped(); i += chunk) {
    out += m.Push(text.substr(i, chunk));
  }
  if (!m.stopped()) out += m.Flush();
  return out;
}

TEST(StopStringMatcherTest, NoStopsPassesEverythingThrough) {
  StopStringMatcher m({});
  EXPECT_EQ(m.Push("hello"), "hello");
  EXPECT_EQ(m.Flush(), "");
  EXPECT_FALSE(m.stopped());
}

TEST(StopStringMatcherTest, CutsBeforeStopAcrossChunks) {
  StopStringMatcher m({"</end>"});
  EXPECT_EQ(m.Push("abc</"), "abc");  // "</" held back
  EXPECT_EQ(m.Push("en"), "");
  EXPECT_EQ(m.Push("d>tail"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "</end>");
  EXPECT_EQ(m.Push("more"), "");
}

TEST(StopStringMatcherTest, ReleasesHeldTextWhenPrefixBreaks) {
  StopStringMatcher m({"STOP"});
  EXPECT_EQ(m.Push("xST"), "x");
  EXPECT_EQ(m.Push("OX"), "STOX");
  EXPECT_EQ(m.Push("S"), "");
  EXPECT_EQ(m.Flush(), "S");
  EXPECT_FALSE(m.stopped());
}

TEST(StopStringMatcherTest, IncludeStopKeepsTheMatch) {
  StopStringMatcher m({"\n\n"}, /*include_stop=*/true);
  EXPECT_EQ(m.Push("para\n"), "para");
  EXPECT_EQ(m.Push("\nnext"), "\n\n");
  EXPECT_TRUE(m.stopped());
}

TEST(StopStringMatcherTest, EarliestOfSeveralStopsWins) {
  StopStringMatcher m({"world", "lo w"});
  EXPECT_EQ(Stream(m, "hello world", 1), "hel");
  EXPECT_EQ(m.matched(), "lo w");
}

TEST(StopStringMatcherTest, FirstCompletedStopWinsRegardlessOfChunking) {
  for (size_t chunk : {1, 2, 4}) {
    StopStringMatcher m({"b", "cba"});
    EXPECT_EQ(Stream(m, "cbac", chunk), "c") << chunk;
    EXPECT_EQ(m.matched(), "b");
  }
}

TEST(StopStringMatcherTest, MultiByteStop) {
  StopStringMatcher m({"日本"});
  EXPECT_EQ(Stream(m, "abc日本語", 3), "abc");
  EXPECT_TRUE(m.stopped());
}

// Property: for random texts/stops and any chunking, the output equals the
// text cut before the stop that completes first (or the whole text).
TEST(StopStringMatcherTest, RandomChunkingMatchesOneShotSearch) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> ch(0, 2), len(1, 4), n(0, 40);
  auto rand_str = [&](int l) {
    std::string s;
    for (int i = 0; i < l; ++i) s += static_cast<char>('a' + ch(rng));
    return s;
  };
  for (int iter = 0; iter < 2000; ++iter) {
    std::vector<std::string> stops = {rand_str(len(rng)), rand_str(len(rng))};
    std::string text = rand_str(n(rng));
    size_t cut = text.size(), end = std::string::npos;
    for (const auto& s : stops) {
      size_t pos = text.find(s);
      if (pos == std::string::npos) continue;
      if (pos + s.size() < end || (pos + s.size() == end && pos < cut)) {
        end = pos + s.size();
        cut = pos;
      }
    }
    StopStringMatcher m(stops);
    std::string got = Stream(m, text, 1 + iter % 5);
    ASSERT_EQ(got, text.substr(0, cut)) << "text=" << text << " stops=" << stops[0] << ","
                                         << stops[1];
    EXPECT_EQ(m.stopped(), cut != text.size());
  }
}

}  // namespace
}  // namespace memserve
