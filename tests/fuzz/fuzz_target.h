// The entry point every fuzz target in tests/fuzz/ defines: libFuzzer's
// (tools/fuzz.sh builds each with clang -fsanitize=fuzzer,address,undefined)
// and the replay test's (fuzz_replay_main.cc, the normal test suite, runs
// the seed corpus through it without libFuzzer). Returns 0; a broken
// invariant aborts (FUZZ_CHECK), which both runners report as a crash.
#ifndef MEMSERVE_TESTS_FUZZ_FUZZ_TARGET_H_
#define MEMSERVE_TESTS_FUZZ_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

// Aborts with the condition and the place when `condition` is false.
#define FUZZ_CHECK(condition)                                                                 \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (false)

#endif  // MEMSERVE_TESTS_FUZZ_FUZZ_TARGET_H_
