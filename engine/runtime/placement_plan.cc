#include "engine/runtime/placement_plan.h"

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/runtime/memory_pool.h"

namespace memserve {
namespace {

// A placement tried for a request: the plan, or why it does not fit.
struct Attempt {
  bool fits = false;
  PlacementPlan plan;
  std::string why;
};

int64_t SliceBytes(const PlacementRequest& r, int64_t columns) {
  return r.table_columns == 0 ? 0 : r.table_bytes / r.table_columns * columns;
}

// What the first GPU holds besides any table: dense weights, KV cache, reserve.
int64_t FirstGpuBase(const PlacementRequest& r) {
  return r.dense_bytes + r.kv_bytes + r.reserve_bytes;
}

std::string FirstGpuParts(const PlacementRequest& r) {
  return absl::StrCat("dense ", FormatGiB(r.dense_bytes), " + KV ", FormatGiB(r.kv_bytes),
                      " + reserve ", FormatGiB(r.reserve_bytes));
}

Attempt TryDevice(const PlacementRequest& r) {
  Attempt a;
  const int64_t need = FirstGpuBase(r) + r.table_bytes;
  if (need > r.gpu_free_bytes[0]) {
    a.why = absl::StrCat("device: GPU 0 needs ", FormatGiB(need), " (table ",
                         FormatGiB(r.table_bytes), " + ", FirstGpuParts(r), ") and has ",
                         FormatGiB(r.gpu_free_bytes[0]), " free");
    return a;
  }
  a.fits = true;
  a.plan.placement = MemoryPlacement::kDevice;
  if (r.table_bytes > 0) {
    a.plan.shards.push_back(PlacedShard{0, 0, r.table_columns, r.table_bytes});
  }
  a.plan.gpu_bytes = {need};
  return a;
}

Attempt TrySharded(const PlacementRequest& r, int gpus) {
  Attempt a;
  a.plan.placement = MemoryPlacement::kSharded;
  const std::vector<std::pair<int64_t, int64_t>> columns =
      r.table_bytes > 0 ? ShardColumns(r.table_columns, gpus)
                        : std::vector<std::pair<int64_t, int64_t>>{};
  const int used = std::max<int>(1, static_cast<int>(columns.size()));
  std::vector<std::string> short_gpus;
  for (int g = 0; g < used; ++g) {
    const int64_t slice =
        g < static_cast<int>(columns.size()) ? columns[g].second - columns[g].first : 0;
    const int64_t slice_bytes = SliceBytes(r, slice);
    const int64_t need = slice_bytes + (g == 0 ? FirstGpuBase(r) : r.reserve_bytes);
    if (need > r.gpu_free_bytes[g]) {
      short_gpus.push_back(absl::StrCat(
          "GPU ", g, " needs ", FormatGiB(need), " (table slice ", FormatGiB(slice_bytes), " + ",
          g == 0 ? FirstGpuParts(r) : absl::StrCat("reserve ", FormatGiB(r.reserve_bytes)),
          ") and has ", FormatGiB(r.gpu_free_bytes[g]), " free"));
    }
    if (slice > 0) {
      a.plan.shards.push_back(PlacedShard{g, columns[g].first, columns[g].second, slice_bytes});
    }
    a.plan.gpu_bytes.push_back(need);
  }
  if (!short_gpus.empty()) {
    a.why = absl::StrCat("sharded over ", used,
                         used == 1 ? " GPU: " : " GPUs: ", absl::StrJoin(short_gpus, ", "));
    return a;
  }
  a.fits = true;
  return a;
}

Attempt TryHost(const PlacementRequest& r) {
  Attempt a;
  const int64_t need = FirstGpuBase(r);
  std::vector<std::string> why;
  if (need > r.gpu_free_bytes[0]) {
    why.push_back(absl::StrCat("GPU 0 needs ", FormatGiB(need), " (", FirstGpuParts(r),
                               ") and has ", FormatGiB(r.gpu_free_bytes[0]), " free"));
  }
  if (r.table_bytes > r.host_bytes) {
    why.push_back(absl::StrCat("the table (", FormatGiB(r.table_bytes),
                               ") exceeds the host memory that can be pinned (",
                               FormatGiB(r.host_bytes), ")"));
  }
  if (!why.empty()) {
    a.why = absl::StrCat("host: ", absl::StrJoin(why, "; "));
    return a;
  }
  a.fits = true;
  a.plan.placement = MemoryPlacement::kHost;
  a.plan.gpu_bytes = {need};
  a.plan.host_table_bytes = r.table_bytes;
  return a;
}

absl::Status CheckRequest(const PlacementRequest& r) {
  if (r.gpu_free_bytes.empty()) {
    return absl::FailedPreconditionError(
        "--memory_placement places the memory pool on CUDA devices; none is visible");
  }
  if (r.max_gpus < 0 || r.max_gpus > static_cast<int>(r.gpu_free_bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat("--memory_gpus is ", r.max_gpus, "; ",
                                                   r.gpu_free_bytes.size(),
                                                   " GPUs are visible (0 = all of them)"));
  }
  for (int64_t v :
       {r.host_bytes, r.table_bytes, r.table_columns, r.dense_bytes, r.kv_bytes, r.reserve_bytes}) {
    if (v < 0) return absl::InvalidArgumentError("placement sizes must be >= 0");
  }
  if (r.table_bytes > 0 && (r.table_columns == 0 || r.table_bytes % r.table_columns != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table_bytes ", r.table_bytes, " is not a multiple of table_columns ", r.table_columns));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MemoryPlacement> ParseMemoryPlacement(absl::string_view text) {
  for (MemoryPlacement p : {MemoryPlacement::kAuto, MemoryPlacement::kDevice,
                            MemoryPlacement::kSharded, MemoryPlacement::kHost}) {
    if (text == MemoryPlacementName(p)) return p;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--memory_placement is '", text, "'; it must be one of auto, device, sharded, host"));
}

absl::StatusOr<int> ParseMemoryGpus(absl::string_view text) {
  if (text == "all") return 0;
  int n = 0;
  if (!absl::SimpleAtoi(text, &n) || n < 1 || n > kMaxMemoryGpus) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--memory_gpus is '", text, "'; it must be all or a number in [1, ", kMaxMemoryGpus, "]"));
  }
  return n;
}

std::vector<PlacedShard> AssignMemoryShards(const PlacementPlan& plan, int memory_shards,
                                            int64_t table_bytes, int64_t table_columns) {
  const int gpus = plan.placement == MemoryPlacement::kSharded
                       ? std::max<int>(1, static_cast<int>(plan.shards.size()))
                       : 1;
  const int wanted = std::max(std::max(1, memory_shards), gpus);
  const std::vector<std::pair<int64_t, int64_t>> columns = ShardColumns(table_columns, wanted);
  const int n = static_cast<int>(columns.size());
  std::vector<PlacedShard> out;
  for (int i = 0; i < n; ++i) {
    PlacedShard s;
    if (plan.placement == MemoryPlacement::kSharded && !plan.shards.empty()) {
      s.gpu = plan.shards[static_cast<size_t>(static_cast<int64_t>(i) * gpus / n)].gpu;
    }
    s.col_begin = columns[i].first;
    s.col_end = columns[i].second;
    s.bytes = table_bytes / table_columns * (s.col_end - s.col_begin);
    out.push_back(s);
  }
  return out;
}

const char* MemoryPlacementName(MemoryPlacement placement) {
  switch (placement) {
    case MemoryPlacement::kAuto:
      return "auto";
    case MemoryPlacement::kDevice:
      return "device";
    case MemoryPlacement::kSharded:
      return "sharded";
    case MemoryPlacement::kHost:
      return "host";
  }
  return "?";
}

std::string FormatGiB(int64_t bytes) {
  if (bytes != 0 && bytes < (1LL << 30)) {
    return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1LL << 20));
  }
  return absl::StrFormat("%.1f GiB", static_cast<double>(bytes) / (1LL << 30));
}

std::string PlacementPlan::Summary() const {
  std::vector<std::string> per_gpu;
  for (size_t g = 0; g < gpu_bytes.size(); ++g) {
    per_gpu.push_back(absl::StrCat("GPU ", g, " ", FormatGiB(gpu_bytes[g])));
  }
  int64_t table = host_table_bytes;
  for (const PlacedShard& s : shards) table += s.bytes;
  std::string what;
  switch (placement) {
    case MemoryPlacement::kSharded:
      what = absl::StrCat("sharded over ", shards.size(), " GPUs by columns: ", FormatGiB(table),
                          " of table, ", FormatGiB(shards.empty() ? 0 : shards.front().bytes),
                          " on the first");
      break;
    case MemoryPlacement::kHost:
      what = absl::StrCat("host: the ", FormatGiB(table), " table stays in host memory");
      break;
    default:
      what = absl::StrCat(MemoryPlacementName(placement), ": the ", FormatGiB(table),
                          " table on GPU 0");
      break;
  }
  if (per_gpu.empty()) return what;
  return absl::StrCat(what, "; planned ", absl::StrJoin(per_gpu, ", "));
}

absl::StatusOr<PlacementPlan> PlanPlacement(const PlacementRequest& request) {
  if (absl::Status s = CheckRequest(request); !s.ok()) return s;
  const int gpus =
      request.max_gpus == 0 ? static_cast<int>(request.gpu_free_bytes.size()) : request.max_gpus;
  std::vector<Attempt> attempts;
  switch (request.placement) {
    case MemoryPlacement::kDevice:
      attempts.push_back(TryDevice(request));
      break;
    case MemoryPlacement::kSharded:
      attempts.push_back(TrySharded(request, gpus));
      break;
    case MemoryPlacement::kHost:
      attempts.push_back(TryHost(request));
      break;
    case MemoryPlacement::kAuto:
      attempts.push_back(TryDevice(request));
      if (!attempts.back().fits && gpus > 1) attempts.push_back(TrySharded(request, gpus));
      if (!attempts.back().fits) attempts.push_back(TryHost(request));
      break;
  }
  if (attempts.back().fits) return std::move(attempts.back().plan);
  std::vector<std::string> why;
  for (const Attempt& a : attempts) why.push_back(a.why);
  return absl::ResourceExhaustedError(absl::StrCat(
      "--memory_placement=", MemoryPlacementName(request.placement),
      ": the memory pool does not fit: ", absl::StrJoin(why, "; "),
      ". Use more GPUs (--memory_gpus), a smaller KV cache (--kv_cache_mb), or another placement"));
}

}  // namespace memserve
