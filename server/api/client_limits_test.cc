#include "server/api/client_limits.h"

#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace memserve {
namespace {

TEST(ClientStreamLimiterTest, RefusesOverTheLimitPerClient) {
  ClientStreamLimiter limiter(2);
  std::vector<ClientStreamLimiter::Slot> a;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ClientStreamLimiter::Slot> slot = limiter.Acquire("a");
    ASSERT_TRUE(slot.ok()) << slot.status();
    a.push_back(*std::move(slot));
  }
  const absl::StatusOr<ClientStreamLimiter::Slot> third = limiter.Acquire("a");
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(third.status().message(),
            "this client already has 2 generation calls open; the limit is "
            "--max_streams_per_client=2 (retry when one ends)");
  // Another client is not affected.
  EXPECT_TRUE(limiter.Acquire("b").ok());
  EXPECT_EQ(limiter.open("a"), 2);
  // A released slot makes room.
  a.pop_back();
  EXPECT_EQ(limiter.open("a"), 1);
  EXPECT_TRUE(limiter.Acquire("a").ok());
  a.clear();
  EXPECT_EQ(limiter.open("a"), 0);
}

TEST(ClientStreamLimiterTest, MovedSlotsReleaseOnce) {
  ClientStreamLimiter limiter(1);
  {
    ClientStreamLimiter::Slot outer;
    {
      absl::StatusOr<ClientStreamLimiter::Slot> slot = limiter.Acquire("a");
      ASSERT_TRUE(slot.ok());
      outer = *std::move(slot);
    }
    EXPECT_EQ(limiter.open("a"), 1);
    ClientStreamLimiter::Slot moved(std::move(outer));
    EXPECT_EQ(limiter.open("a"), 1);
  }
  EXPECT_EQ(limiter.open("a"), 0);
}

TEST(ClientStreamLimiterTest, ZeroMeansNoLimit) {
  ClientStreamLimiter limiter(0);
  std::vector<ClientStreamLimiter::Slot> slots;
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<ClientStreamLimiter::Slot> slot = limiter.Acquire("a");
    ASSERT_TRUE(slot.ok());
    slots.push_back(*std::move(slot));
  }
}

}  // namespace
}  // namespace memserve
