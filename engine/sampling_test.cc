#include "engine/sampling.h"

#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::HasSubstr;

SamplingParams Seeded(uint64_t seed) {
  SamplingParams p;
  p.seed = seed;
  p.has_seed = true;
  return p;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  double mx = -1e300;
  for (float l : logits) mx = std::max<double>(mx, l);
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i)
    sum += (p[i] = std::exp((logits[i] - mx) / temperature));
  for (double& x : p) x /= sum;
  return p;
}

std::vector<double> Frequencies(Sampler* s, const std::vector<float>& logits, int draws,
                                const std::vector<int>& previous = {}) {
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) f[s->Sample(logits, previous)] += 1.0 / draws;
  return f;
}

std::vector<float> RandomLogits(std::mt19937* rng, int vocab) {
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> l(vocab);
  for (float& x : l) x = d(*rng);
  return l;
}

int Argmax(const std::vector<float>& l) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(l.size()); ++i) {
    if (l[i] > l[best]) best = i;
  }
  return best;
}

TEST(SamplerTest, TemperatureZeroIsArgmaxWithLowestIdOnTies) {
  SamplingParams p = Seeded(1);
  p.temperature = 0.0f;
  Sampler s(p);
  EXPECT_EQ(s.Sample(std::vector<float>{1, 5, 3, 5}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{-2, -1, -1}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{7}, {}), 0);
  std::mt19937 rng(3);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> l = RandomLogits(&rng, 100);
    EXPECT_EQ(s.Sample(l, {}), Argmax(l));
  }
}

TEST(SamplerTest, TopK1AndTinyTopPAreGreedy) {
  std::mt19937 rng(5);
  SamplingParams k1 = Seeded(2);
  k1.top_k = 1;
  SamplingParams tiny_p = Seeded(3);
  tiny_p.top_p = 1e-6f;
  Sampler a(k1), b(tiny_p);
  for (int i = 0; i < 200; ++i) {
    std::vector<float> l = RandomLogits(&rng, 1000);
    const int want = Argmax(l);
    EXPECT_EQ(a.Sample(l, {}), want);
    EXPECT_EQ(b.Sample(l, {}), want);
  }
}

TEST(SamplerTest, SeededIsReproducibleAndIndependentOfOtherSamplers) {
  std::mt19937 rng(7);
  std::vector<std::vector<float>> steps;
  for (int i = 0; i < 100; ++i) steps.push_back(RandomLogits(&rng, 50));
  SamplingParams p = Seeded(42);
  p.temperature = 1.3f;
  p.top_p = 0.9f;
  auto run = [&](Sampler* other) {
    Sampler s(p);
    std::vector<int> out;
    for (const auto& l : steps) {
      out.push_back(s.Sample(l, out));
      if (other != nullptr) other->Sample(l, {});  // interleaved requests
    }
    return out;
  };
  const std::vector<int> first = run(nullptr);
  Sampler noise(Seeded(999));
  EXPECT_EQ(run(&noise), first);
  p.seed = 43;
  EXPECT_NE(run(nullptr), first);
}

TEST(SamplerTest, UnseededSamplersDiffer) {
  std::vector<float> flat(1000, 0.0f);
  Sampler a{SamplingParams()}, b{SamplingParams()};
  std::vector<int> xa, xb;
  for (int i = 0; i < 20; ++i) {
    xa.push_back(a.Sample(flat, {}));
    xb.push_back(b.Sample(flat, {}));
  }
  EXPECT_NE(xa, xb);
}

TEST(SamplerTest, FrequenciesMatchSoftmaxWithTemperature) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
  for (float t : {0.5f, 1.0f, 2.0f}) {
    SamplingParams p = Seeded(11);
    p.temperature = t;
    Sampler s(p);
    const std::vector<double> want = Softmax(logits, t);
    const std::vector<double> got = Frequencies(&s, logits, 200000);
    for (size_t i = 0; i < logits.size(); ++i) {
      EXPECT_NEAR(got[i], want[i], 0.005) << "temperature " << t << " token " << i;
    }
  }
}

TEST(SamplerTest, TopKRenormalizesOverTheKBest) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.5f, -1.0f};
  SamplingParams p = Seeded(12);
  p.top_k = 2;
  Sampler s(p);
  const std::vector<double> got = Frequencies(&s, logits, 100000);
  const double p1 = 1.0 / (1.0 + std::exp(-0.5));
  EXPECT_NEAR(got[1], p1, 0.005);
  EXPECT_NEAR(got[3], 1.0 - p1, 0.005);
  EXPECT_EQ(got[0] + got[2] + got[4], 0.0);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // probabilities 0.5, 0.3, 0.15, 0.05
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  SamplingParams p = Seeded(13);
  p.top_p = 0.75f;
  Sampler s(p);
  const std::vector<double> got = Frequencies(&s, logits, 100000);
  EXPECT_NEAR(got[0], 0.5 / 0.8, 0.005);
  EXPECT_NEAR(got[1], 0.3 / 0.8, 0.005);
  EXPECT_EQ(got[2] + got[3], 0.0);
}

TEST(SamplerTest, TopPLargerThanThePartialSortPrefix) {
  // 1000 equal logits: the nucleus for top_p 0.4995 is ids 0..499 (ties go to
  // the lower id), more than the 256 sorted first.
  std::vector<float> flat(1000, 0.0f);
  SamplingParams p = Seeded(14);
  p.top_p = 0.4995f;
  Sampler s(p);
  std::set<int> seen;
  for (int i = 0; i < 3000; ++i) {
    const int id = s.Sample(flat, {});
    ASSERT_LT(id, 500);
    seen.insert(id);
  }
  EXPECT_GT(*seen.rbegin(), 400);
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  SamplingParams p = Seeded(15);
  p.min_p = 0.2f;  // keep p >= 0.2 * 0.5 = 0.1
  Sampler s(p);
  const std::vector<double> got = Frequencies(&s, logits, 100000);
  EXPECT_EQ(got[3], 0.0);
  EXPECT_NEAR(got[0], 0.5 / 0.95, 0.005);
  EXPECT_NEAR(got[1], 0.3 / 0.95, 0.005);
  EXPECT_NEAR(got[2], 0.15 / 0.95, 0.005);
  // min_p = 1 keeps only the best token.
  p.min_p = 1.0f;
  Sampler only_best(p);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(only_best.Sample(logits, {}), 0);
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams p = Seeded(16);
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  // Token 0 (logit 3) penalized to 1.5 < 2: token 1 wins.
  EXPECT_EQ(s.Sample(std::vector<float>{3.0f, 2.0f}, std::vector<int>{0}), 1);
  // Negative logits: -1 becomes -2, so the unpenalized -1.5 wins.
  EXPECT_EQ(s.Sample(std::vector<float>{-1.0f, -1.5f}, std::vector<int>{0}), 1);
  // Without history, nothing changes.
  EXPECT_EQ(s.Sample(std::vector<float>{3.0f, 2.0f}, {}), 0);
}

TEST(SamplerTest, FrequencyAndPresencePenaltiesCountOccurrences) {
  SamplingParams p = Seeded(17);
  p.temperature = 0.0f;
  p.frequency_penalty = 0.5f;
  Sampler freq(p);
  // Token 0: 3.0 - 0.5 * 3 = 1.5 < 2.0.
  EXPECT_EQ(freq.Sample(std::vector<float>{3.0f, 2.0f}, std::vector<int>{0, 0, 0}), 1);
  // Token 0: 3.0 - 0.5 * 1 = 2.5 > 2.0.
  EXPECT_EQ(freq.Sample(std::vector<float>{3.0f, 2.0f}, std::vector<int>{0}), 0);
  p.frequency_penalty = 0.0f;
  p.presence_penalty = 1.5f;
  Sampler pres(p);
  EXPECT_EQ(pres.Sample(std::vector<float>{3.0f, 2.0f}, std::vector<int>{0}), 1);
  // Ids outside the vocabulary are ignored.
  EXPECT_EQ(pres.Sample(std::vector<float>{3.0f, 2.0f}, std::vector<int>{-1, 7}), 0);
}

TEST(SamplerTest, NanLogitsAreNeverChosen) {
  const float nan = std::nanf("");
  std::vector<float> logits = {nan, 0.0f, nan, 0.0f};
  Sampler s(Seeded(18));
  for (int i = 0; i < 1000; ++i) {
    const int id = s.Sample(logits, {});
    ASSERT_TRUE(id == 1 || id == 3) << id;
  }
  SamplingParams g = Seeded(18);
  g.temperature = 0.0f;
  Sampler greedy(g);
  EXPECT_EQ(greedy.Sample(std::vector<float>{nan, -5.0f}, {}), 1);
}

TEST(SamplerTest, ExtremeTemperaturesStayFinite) {
  const std::vector<float> logits = {100.0f, 99.0f, -100.0f};
  SamplingParams cold = Seeded(19);
  cold.temperature = 1e-6f;
  Sampler c(cold);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(c.Sample(logits, {}), 0);
  SamplingParams hot = Seeded(20);
  hot.temperature = 1e6f;
  Sampler h(hot);
  const std::vector<double> got = Frequencies(&h, logits, 30000);
  for (double f : got) EXPECT_NEAR(f, 1.0 / 3.0, 0.02);
}

TEST(LogprobsTest, LogSoftmaxOfRawLogits) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f};
  const TokenLogprobs lp = ComputeLogprobs(logits, 4, 3);
  const std::vector<double> p = Softmax(logits, 1.0);
  EXPECT_NEAR(lp.chosen, std::log(p[4]), 1e-6);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 1);  // tie with 2: the lower id first
  EXPECT_EQ(lp.top[1].first, 2);
  EXPECT_EQ(lp.top[2].first, 0);
  for (const auto& [id, v] : lp.top) EXPECT_NEAR(v, std::log(p[id]), 1e-6);
  EXPECT_EQ(ComputeLogprobs(logits, 0, 0).top.size(), 0u);
  EXPECT_EQ(ComputeLogprobs(logits, 0, 100).top.size(), logits.size());
}

TEST(LogprobsTest, LargeLogitsDoNotOverflow) {
  const std::vector<float> logits = {1000.0f, 999.0f};
  const TokenLogprobs lp = ComputeLogprobs(logits, 1, 2);
  EXPECT_NEAR(lp.chosen, -1.0 - std::log1p(std::exp(-1.0)), 1e-5);
  EXPECT_NEAR(lp.top[0].second, -std::log1p(std::exp(-1.0)), 1e-5);
}

}  // namespace
}  // namespace memserve
