#include "engine/kv_cache.h"

#include <atomic>
#include <cassert>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace memserve {

absl::Status PagedKvLayout::Validate() const {
  if (block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged KV layout: block_size must be >= 1, got ", block_size));
  }
  if (num_blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged KV layout: num_blocks must be >= 1, got ", num_blocks));
  }
  if (kv_dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged KV layout: kv_dim must be >= 1, got ", kv_dim));
  }
  if (kv_dim > std::numeric_limits<int64_t>::max() / block_size / num_blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged KV layout: num_blocks * block_size * kv_dim (", num_blocks, " * ",
                     block_size, " * ", kv_dim, ") overflows int64"));
  }
  return absl::OkStatus();
}

int KvBlocksNeeded(int total_tokens, int block_size) {
  if (total_tokens <= 0) return 0;
  return static_cast<int>((static_cast<int64_t>(total_tokens) + block_size - 1) / block_size);
}

KvBlockAllocator::KvBlockAllocator(int num_blocks) : allocated_(num_blocks, false) {
  // Reversed so that a fresh pool hands out 0, 1, 2, ...
  free_.reserve(num_blocks);
  for (KvBlockId b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

std::optional<KvBlockId> KvBlockAllocator::Allocate() {
  if (free_.empty()) return std::nullopt;
  const KvBlockId block = free_.back();
  free_.pop_back();
  allocated_[block] = true;
  return block;
}

absl::Status KvBlockAllocator::Free(KvBlockId block) {
  if (block < 0 || block >= num_blocks()) {
    return absl::OutOfRangeError(
        absl::StrCat("KV block ", block, " is not from this pool of ", num_blocks(), " blocks"));
  }
  if (!allocated_[block]) {
    return absl::FailedPreconditionError(
        absl::StrCat("KV block ", block, " freed but not allocated (double free?)"));
  }
  allocated_[block] = false;
  free_.push_back(block);
  return absl::OkStatus();
}

double KvBlockAllocator::usage() const {
  return num_blocks() == 0 ? 0.0 : static_cast<double>(num_used()) / num_blocks();
}

BlockTable::BlockTable(int block_size) : block_size_(block_size) { assert(block_size >= 1); }

int BlockTable::BlocksNeeded(int total_tokens) const {
  return KvBlocksNeeded(total_tokens, block_size_);
}

absl::Status BlockTable::Reserve(int new_total_tokens, KvBlockAllocator* allocator) {
  if (new_total_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block table: token count must be >= 0, got ", new_total_tokens));
  }
  if (new_total_tokens <= num_tokens_) return absl::OkStatus();
  const int missing = BlocksNeeded(new_total_tokens) - num_blocks();
  if (missing > allocator->num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: ", missing, " more blocks needed for ", new_total_tokens,
                     " tokens, ", allocator->num_free(), " free of ", allocator->num_blocks()));
  }
  for (int i = 0; i < missing; ++i) blocks_.push_back(*allocator->Allocate());
  num_tokens_ = new_total_tokens;
  return absl::OkStatus();
}

void BlockTable::Release(KvBlockAllocator* allocator) {
  for (KvBlockId block : blocks_) {
    const absl::Status freed = allocator->Free(block);
    // Fails only when the table is released into a pool it did not come
    // from: a caller bug that the allocator refused without damage.
    assert(freed.ok());
    (void)freed;
  }
  blocks_.clear();
  num_tokens_ = 0;
}

KvSlot BlockTable::Locate(int position) const {
  assert(position >= 0 && position < num_tokens_);
  return KvSlot{blocks_[position / block_size_], position % block_size_};
}

KvCache::KvCache(const void* owner, const PagedKvLayout& layout, DType dtype,
                 std::unique_ptr<Buffer> k, std::unique_ptr<Buffer> v)
    : owner_(owner), layout_(layout), dtype_(dtype), k_(std::move(k)), v_(std::move(v)) {
  static std::atomic<uint64_t> next_id{1};
  id_ = next_id.fetch_add(1, std::memory_order_relaxed);
}

Tensor KvCache::LayerView(Buffer* buffer, int layer) const {
  const int64_t rows = static_cast<int64_t>(layout_.num_blocks) * layout_.block_size;
  return Tensor::Of(buffer, dtype_, {rows, layout_.kv_dim},
                    static_cast<size_t>(layer * layout_.floats_per_layer()) * DTypeSize(dtype_));
}

KvCacheManager::KvCacheManager(int num_blocks, int block_size)
    : block_size_(block_size), allocator_(num_blocks) {
  assert(block_size >= 1);
}

KvCacheManager::KvCacheManager(std::unique_ptr<KvCache> storage)
    : block_size_(storage->layout().block_size),
      allocator_(storage->layout().num_blocks),
      storage_(std::move(storage)) {}

absl::Status KvCacheManager::Reserve(uint64_t sequence, int total_tokens) {
  if (total_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: token count of sequence ", sequence,
                                                   " must be >= 0, got ", total_tokens));
  }
  if (total_tokens == 0) return absl::OkStatus();
  auto [it, created] = tables_.try_emplace(sequence, block_size_);
  const absl::Status reserved = it->second.Reserve(total_tokens, &allocator_);
  // A new table that got no blocks is not kept.
  if (created && it->second.num_blocks() == 0) tables_.erase(it);
  return reserved;
}

void KvCacheManager::Release(uint64_t sequence) {
  auto it = tables_.find(sequence);
  if (it == tables_.end()) return;
  it->second.Release(&allocator_);
  tables_.erase(it);
}

absl::Span<const KvBlockId> KvCacheManager::blocks(uint64_t sequence) const {
  auto it = tables_.find(sequence);
  return it == tables_.end() ? absl::Span<const KvBlockId>() : it->second.blocks();
}

int KvCacheManager::num_tokens(uint64_t sequence) const {
  auto it = tables_.find(sequence);
  return it == tables_.end() ? 0 : it->second.num_tokens();
}

int KvCacheManager::BlocksNeeded(int total_tokens) const {
  return KvBlocksNeeded(total_tokens, block_size_);
}

}  // namespace memserve
