// The memory-pool placement planner on the CPU: every combination of 1..8
// GPUs of 24/80/141 GB, tables of 2..256 GiB and two host memory sizes,
// checked against an independent statement of the rules, plus hand cases
// with the messages a user reads.
#include "engine/runtime/placement_plan.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

constexpr int64_t kGiB = 1LL << 30;
constexpr int64_t kGB = 1000LL * 1000 * 1000;

PlacementRequest Request(int gpus, int64_t gpu_bytes, int64_t table_bytes, int64_t host_bytes,
                         int64_t v_dim = 1024) {
  PlacementRequest r;
  r.gpu_free_bytes.assign(gpus, gpu_bytes);
  r.host_bytes = host_bytes;
  r.table_bytes = table_bytes;
  r.table_columns = v_dim;
  r.dense_bytes = 1 * kGiB;
  r.kv_bytes = 4 * kGiB;
  r.reserve_bytes = 1 * kGiB;
  return r;
}

// Columns of shard g of r, written independently of ShardColumns: shard
// boundaries are ceil(v_dim * g / r) rounded up to a multiple of 16.
int64_t ShardWidth(int64_t v_dim, int r, int g) {
  auto boundary = [&](int b) -> int64_t {
    if (b == r) return v_dim;
    const int64_t exact = (v_dim * b + r - 1) / r;
    return std::min<int64_t>(v_dim, (exact + 15) / 16 * 16);
  };
  return boundary(g + 1) - boundary(g);
}

// The rules of placement_plan.h stated directly.
bool DeviceFits(const PlacementRequest& r) {
  return r.dense_bytes + r.kv_bytes + r.reserve_bytes + r.table_bytes <= r.gpu_free_bytes[0];
}
bool ShardedFits(const PlacementRequest& r, int gpus) {
  for (int g = 0; g < gpus; ++g) {
    const int64_t slice = r.table_bytes / r.table_columns * ShardWidth(r.table_columns, gpus, g);
    const int64_t extra = g == 0 ? r.dense_bytes + r.kv_bytes : 0;
    if (slice + extra + r.reserve_bytes > r.gpu_free_bytes[g]) return false;
  }
  return true;
}
bool HostFits(const PlacementRequest& r) {
  return r.dense_bytes + r.kv_bytes + r.reserve_bytes <= r.gpu_free_bytes[0] &&
         r.table_bytes <= r.host_bytes;
}

void ExpectConsistent(const PlacementRequest& r, const PlacementPlan& plan,
                      const std::string& where) {
  ASSERT_NE(plan.placement, MemoryPlacement::kAuto) << where;
  ASSERT_FALSE(plan.gpu_bytes.empty()) << where;
  for (size_t g = 0; g < plan.gpu_bytes.size(); ++g) {
    EXPECT_LE(plan.gpu_bytes[g], r.gpu_free_bytes[g]) << where << " GPU " << g;
  }
  int64_t next_column = 0, table = plan.host_table_bytes;
  for (const PlacedShard& s : plan.shards) {
    EXPECT_EQ(s.col_begin, next_column) << where;
    EXPECT_EQ(s.col_begin % 16, 0) << where;
    EXPECT_GT(s.col_end, s.col_begin) << where;
    EXPECT_EQ(s.bytes, r.table_bytes / r.table_columns * (s.col_end - s.col_begin)) << where;
    EXPECT_LT(s.gpu, static_cast<int>(plan.gpu_bytes.size())) << where;
    next_column = s.col_end;
    table += s.bytes;
  }
  EXPECT_EQ(table, r.table_bytes) << where;
  if (plan.placement == MemoryPlacement::kHost) {
    EXPECT_TRUE(plan.shards.empty()) << where;
  } else {
    EXPECT_EQ(next_column, r.table_columns) << where;
  }
}

TEST(PlacementPlanTest, AutoFollowsDeviceThenShardedThenHostForEveryNodeShape) {
  int cases = 0, device = 0, sharded = 0, host = 0, refused = 0;
  for (int gpus = 1; gpus <= 8; ++gpus) {
    for (int64_t gpu_gb : {24, 80, 141}) {
      for (int64_t table_gib : {2, 8, 32, 64, 128, 256}) {
        for (int64_t host_gib : {64, 512}) {
          const PlacementRequest r = Request(gpus, gpu_gb * kGB, table_gib * kGiB, host_gib * kGiB);
          const std::string where = absl::StrCat(gpus, " x ", gpu_gb, " GB, table ", table_gib,
                                                 " GiB, host ", host_gib, " GiB");
          ++cases;
          absl::StatusOr<PlacementPlan> plan = PlanPlacement(r);
          if (DeviceFits(r)) {
            ASSERT_TRUE(plan.ok()) << where << ": " << plan.status();
            EXPECT_EQ(plan->placement, MemoryPlacement::kDevice) << where;
            ++device;
          } else if (gpus > 1 && ShardedFits(r, gpus)) {
            ASSERT_TRUE(plan.ok()) << where << ": " << plan.status();
            EXPECT_EQ(plan->placement, MemoryPlacement::kSharded) << where;
            EXPECT_EQ(plan->shards.size(), static_cast<size_t>(gpus)) << where;
            ++sharded;
          } else if (HostFits(r)) {
            ASSERT_TRUE(plan.ok()) << where << ": " << plan.status();
            EXPECT_EQ(plan->placement, MemoryPlacement::kHost) << where;
            ++host;
          } else {
            ASSERT_FALSE(plan.ok()) << where << " planned " << plan->Summary();
            EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted) << where;
            ++refused;
            continue;
          }
          ExpectConsistent(r, *plan, where);
        }
      }
    }
  }
  // The sweep exercises every outcome.
  EXPECT_EQ(cases, 8 * 3 * 6 * 2);
  EXPECT_GT(device, 0);
  EXPECT_GT(sharded, 0);
  EXPECT_GT(host, 0);
  EXPECT_GT(refused, 0);
}

TEST(PlacementPlanTest, ExplicitPlacementsAreHonouredOrRefused) {
  for (int gpus = 1; gpus <= 8; ++gpus) {
    for (int64_t table_gib : {2, 32, 256}) {
      for (MemoryPlacement p :
           {MemoryPlacement::kDevice, MemoryPlacement::kSharded, MemoryPlacement::kHost}) {
        PlacementRequest r = Request(gpus, 80 * kGB, table_gib * kGiB, 128 * kGiB);
        r.placement = p;
        const std::string where =
            absl::StrCat(MemoryPlacementName(p), ", ", gpus, " x 80 GB, table ", table_gib, " GiB");
        const bool fits = p == MemoryPlacement::kDevice    ? DeviceFits(r)
                          : p == MemoryPlacement::kSharded ? ShardedFits(r, gpus)
                                                           : HostFits(r);
        absl::StatusOr<PlacementPlan> plan = PlanPlacement(r);
        ASSERT_EQ(plan.ok(), fits) << where << ": " << plan.status();
        if (!fits) {
          EXPECT_NE(plan.status().message().find(
                        absl::StrCat("--memory_placement=", MemoryPlacementName(p))),
                    std::string::npos)
              << plan.status();
          continue;
        }
        EXPECT_EQ(plan->placement, p) << where;
        ExpectConsistent(r, *plan, where);
      }
    }
  }
}

TEST(PlacementPlanTest, SmallTableOnOneGpuIsDevice) {
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(Request(1, 24 * kGB, 2 * kGiB, 64 * kGiB));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->placement, MemoryPlacement::kDevice);
  ASSERT_EQ(plan->gpu_bytes.size(), 1u);
  EXPECT_EQ(plan->gpu_bytes[0], 8 * kGiB);
  EXPECT_EQ(plan->Summary(), "device: the 2.0 GiB table on GPU 0; planned GPU 0 8.0 GiB");
}

TEST(PlacementPlanTest, PaperScaleTableShardsOverEightH200s) {
  // 64M rows x 2048 bf16 = 256 GiB: no single GPU holds it.
  absl::StatusOr<PlacementPlan> plan =
      PlanPlacement(Request(8, 141 * kGB, 256 * kGiB, 64 * kGiB, 2048));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->placement, MemoryPlacement::kSharded);
  ASSERT_EQ(plan->shards.size(), 8u);
  for (int g = 0; g < 8; ++g) {
    EXPECT_EQ(plan->shards[g].gpu, g);
    EXPECT_EQ(plan->shards[g].col_begin, 256 * g);
    EXPECT_EQ(plan->shards[g].bytes, 32 * kGiB);
  }
  EXPECT_EQ(plan->gpu_bytes[0], 38 * kGiB);  // slice + dense + KV + reserve
  EXPECT_EQ(plan->gpu_bytes[7], 33 * kGiB);  // slice + reserve
}

TEST(PlacementPlanTest, MemoryGpusLimitsTheShards) {
  PlacementRequest r = Request(8, 80 * kGB, 128 * kGiB, 64 * kGiB);
  r.max_gpus = 4;
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(r);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->placement, MemoryPlacement::kSharded);
  EXPECT_EQ(plan->shards.size(), 4u);
  EXPECT_EQ(plan->gpu_bytes.size(), 4u);
}

TEST(PlacementPlanTest, TableLargerThanGpusGoesToHost) {
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(Request(1, 24 * kGB, 32 * kGiB, 64 * kGiB));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->placement, MemoryPlacement::kHost);
  EXPECT_EQ(plan->host_table_bytes, 32 * kGiB);
  EXPECT_TRUE(plan->shards.empty());
  EXPECT_EQ(plan->gpu_bytes, std::vector<int64_t>{6 * kGiB});
}

TEST(PlacementPlanTest, RefusalSaysWhyEachPlacementFailed) {
  // 2 x 80 GB (74.5 GiB each) cannot hold 256 GiB, and the host has 128 GiB.
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(Request(2, 80 * kGB, 256 * kGiB, 128 * kGiB));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  const std::string m(plan.status().message());
  EXPECT_NE(m.find("--memory_placement=auto: the memory pool does not fit"), std::string::npos)
      << m;
  EXPECT_NE(m.find("device: GPU 0 needs 262.0 GiB (table 256.0 GiB + dense 1.0 GiB + KV 4.0 GiB "
                   "+ reserve 1.0 GiB) and has 74.5 GiB free"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("sharded over 2 GPUs: GPU 0 needs 134.0 GiB"), std::string::npos) << m;
  EXPECT_NE(m.find("GPU 1 needs 129.0 GiB"), std::string::npos) << m;
  EXPECT_NE(m.find("host: the table (256.0 GiB) exceeds the host memory that can be pinned "
                   "(128.0 GiB)"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("--memory_gpus"), std::string::npos) << m;
}

TEST(PlacementPlanTest, ModelWithoutMemoryLayersNeedsOnlyTheDenseModel) {
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(Request(1, 24 * kGB, 0, 0));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->placement, MemoryPlacement::kDevice);
  EXPECT_TRUE(plan->shards.empty());
}

TEST(PlacementPlanTest, BadRequestsNameTheFlag) {
  PlacementRequest none = Request(1, 24 * kGB, 2 * kGiB, 64 * kGiB);
  none.gpu_free_bytes.clear();
  EXPECT_EQ(PlanPlacement(none).status().code(), absl::StatusCode::kFailedPrecondition);

  PlacementRequest too_many = Request(8, 80 * kGB, 2 * kGiB, 64 * kGiB);
  too_many.max_gpus = 9;
  absl::Status s = PlanPlacement(too_many).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "--memory_gpus is 9; 8 GPUs are visible (0 = all of them)");

  PlacementRequest ragged = Request(1, 80 * kGB, 2 * kGiB + 1, 64 * kGiB);
  EXPECT_EQ(PlanPlacement(ragged).status().code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(*ParseMemoryPlacement("sharded"), MemoryPlacement::kSharded);
  EXPECT_EQ(ParseMemoryPlacement("gpu").status().message(),
            "--memory_placement is 'gpu'; it must be one of auto, device, sharded, host");
}

TEST(ParseMemoryGpusTest, AllOrACountElseOneLineNamingTheFlag) {
  EXPECT_EQ(*ParseMemoryGpus("all"), 0);
  EXPECT_EQ(*ParseMemoryGpus("1"), 1);
  EXPECT_EQ(*ParseMemoryGpus("8"), 8);
  EXPECT_EQ(*ParseMemoryGpus("64"), 64);
  for (const char* bad : {"0", "-1", "65", "two", "", "1.5", "all,"}) {
    absl::StatusOr<int> n = ParseMemoryGpus(bad);
    ASSERT_FALSE(n.ok()) << bad;
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(n.status().message(),
              absl::StrCat("--memory_gpus is '", bad, "'; it must be all or a number in [1, 64]"));
  }
  EXPECT_EQ(ParseMemoryPlacement("gpu").status().message(),
            "--memory_placement is 'gpu'; it must be one of auto, device, sharded, host");
}

TEST(AssignMemoryShardsTest, DeviceAndHostSplitOnOneGpuShardedSpreadsOverThePlansGpus) {
  PlacementPlan host;
  host.placement = MemoryPlacement::kHost;
  std::vector<PlacedShard> s = AssignMemoryShards(host, 1, 128 * 64, 64);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].col_end, 64);
  EXPECT_EQ(s[0].bytes, 128 * 64);
  s = AssignMemoryShards(host, 4, 128 * 64, 64);  // virtual shards, GPU 0
  ASSERT_EQ(s.size(), 4u);
  for (const PlacedShard& p : s) EXPECT_EQ(p.gpu, 0);
  EXPECT_EQ(s[3].col_begin, 48);
  EXPECT_EQ(s[3].bytes, 128 * 16);

  PlacementPlan sharded;
  sharded.placement = MemoryPlacement::kSharded;
  sharded.shards = {{0, 0, 512, 0}, {1, 512, 1024, 0}};
  s = AssignMemoryShards(sharded, 1, 2048 * 1024, 1024);  // one shard per GPU
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].gpu, 0);
  EXPECT_EQ(s[1].gpu, 1);
  EXPECT_EQ(s[1].col_begin, 512);
  s = AssignMemoryShards(sharded, 4, 2048 * 1024, 1024);  // two shards per GPU
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].gpu, 0);
  EXPECT_EQ(s[1].gpu, 0);
  EXPECT_EQ(s[2].gpu, 1);
  EXPECT_EQ(s[3].gpu, 1);
  int64_t bytes = 0;
  for (const PlacedShard& p : s) bytes += p.bytes;
  EXPECT_EQ(bytes, 2048 * 1024);

  PlacementPlan one_gpu;  // R shards on one GPU: the sharded path without R GPUs
  one_gpu.placement = MemoryPlacement::kSharded;
  one_gpu.shards = {{0, 0, 128, 0}};
  s = AssignMemoryShards(one_gpu, 4, 100 * 128, 128);
  ASSERT_EQ(s.size(), 4u);
  for (const PlacedShard& p : s) EXPECT_EQ(p.gpu, 0);
}

TEST(PlacementPlanSummaryTest, WithoutGpusSaysOnlyWhereTheTableIs) {
  PlacementPlan host;
  host.placement = MemoryPlacement::kHost;
  host.host_table_bytes = 1LL << 30;
  EXPECT_EQ(host.Summary(), "host: the 1.0 GiB table stays in host memory");
  host.host_table_bytes = 16LL << 20;
  EXPECT_EQ(host.Summary(), "host: the 16.0 MiB table stays in host memory");
}

}  // namespace
}  // namespace memserve
