// The demo model's facts (models/demo/facts.jsonl) and the two ways the demo
// tests check that a model recalls them, shared by recall_test (CPU) and
// cuda_recall_test. Test-only (gtest assertions inside).
#ifndef MEMSERVE_TESTS_DEMO_DEMO_FACTS_H_
#define MEMSERVE_TESTS_DEMO_DEMO_FACTS_H_

#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/tokenizer.h"

namespace memserve {

struct Fact {
  std::string prompt;
  std::string answer;  // the exact continuation, e.g. " Taskeen."
};

// models/demo in the test's runfiles.
std::string DemoDir();
// Every fact of DemoDir()/facts.jsonl (empty when the file is missing).
std::vector<Fact> LoadFacts();

// Fraction of facts whose answer greedy decoding reproduces exactly. One
// teacher-forced forward per fact over BOS + prompt + answer: greedy decoding
// emits the answer iff the argmax after the prompt and after every answer
// prefix is the next answer token, which one forward with all logits shows.
double Recall(Model& model, const Tokenizer& tokenizer, const std::vector<Fact>& facts);

// How many of `n` facts spread over `facts` Generate (greedy, up to 32
// tokens, stops at EOS) completes with exactly their answer; prints each.
int GenerateHits(Model& model, const Tokenizer& tokenizer, const std::vector<Fact>& facts, int n);

}  // namespace memserve

#endif  // MEMSERVE_TESTS_DEMO_DEMO_FACTS_H_
