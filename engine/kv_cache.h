// Paged KV-cache bookkeeping: a pool of fixed-size blocks (each holds the
// keys and values of `block_size` consecutive tokens of one sequence), a free
// list over them, and per-sequence block tables. Pure bookkeeping: the K/V
// floats themselves belong to the model, laid out as PagedKvLayout says.
#ifndef MEMSERVE_ENGINE_KV_CACHE_H_
#define MEMSERVE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace memserve {

using KvBlockId = int32_t;

// Where one token's K (or V) vector lives: a block and the token's offset in it.
struct KvSlot {
  KvBlockId block = 0;
  int offset = 0;  // [0, block_size)
};

// The storage the model allocates per layer, once for K and once for V:
// float[num_blocks, block_size, kv_dim] with kv_dim = n_kv_heads * head_dim.
struct PagedKvLayout {
  int block_size = 0;  // tokens per block
  int num_blocks = 0;
  int64_t kv_dim = 0;

  // InvalidArgument naming the field unless every field is >= 1 and
  // floats_per_layer() fits in int64.
  absl::Status Validate() const;

  int64_t floats_per_block() const { return static_cast<int64_t>(block_size) * kv_dim; }
  int64_t floats_per_layer() const { return num_blocks * floats_per_block(); }
  // Index of the first of the kv_dim floats of `slot` in one layer's array.
  // REQUIRES: Validate().ok(), slot.block in [0, num_blocks), slot.offset in [0, block_size).
  int64_t Offset(KvSlot slot) const {
    return slot.block * floats_per_block() + static_cast<int64_t>(slot.offset) * kv_dim;
  }
};

// A free list over block ids [0, num_blocks). Allocation and release are
// O(1); the most recently freed block is reused first.
// Not thread-safe (the engine thread owns it).
class KvBlockAllocator {
 public:
  // REQUIRES: num_blocks >= 0.
  explicit KvBlockAllocator(int num_blocks);
  KvBlockAllocator(const KvBlockAllocator&) = delete;
  KvBlockAllocator& operator=(const KvBlockAllocator&) = delete;

  // A free block, now owned by the caller, or nullopt when none is free.
  std::optional<KvBlockId> Allocate();
  // Returns `block` to the pool. Freeing a block that is not allocated
  // (double free: FailedPrecondition) or not from this pool (OutOfRange) is a
  // caller bug; it is reported and the pool is left unchanged.
  absl::Status Free(KvBlockId block);

  int num_blocks() const { return static_cast<int>(allocated_.size()); }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_used() const { return num_blocks() - num_free(); }
  // num_used / num_blocks in [0, 1]; 0 for an empty pool.
  double usage() const;

 private:
  std::vector<KvBlockId> free_;  // a stack; the top is allocated next
  std::vector<bool> allocated_;  // [num_blocks]
};

// The blocks of one sequence, in position order: token position p lives in
// blocks()[p / block_size] at offset p % block_size. The table owns its
// blocks until Release; destroying a table that still holds blocks leaks
// them from the pool.
class BlockTable {
 public:
  // REQUIRES: block_size >= 1.
  explicit BlockTable(int block_size);

  // Blocks needed to hold `total_tokens` tokens (ceil division; 0 for <= 0).
  int BlocksNeeded(int total_tokens) const;

  // Grows the table so it covers positions [0, new_total_tokens), allocating
  // only the missing blocks. All or nothing: when the pool has too few free
  // blocks, ResourceExhausted is returned and nothing is allocated. A total
  // at or below num_tokens() is a no-op (tables never shrink).
  // InvalidArgument for a negative total.
  absl::Status Reserve(int new_total_tokens, KvBlockAllocator* allocator);

  // Returns every block to `allocator` (the one they came from) and empties
  // the table.
  void Release(KvBlockAllocator* allocator);

  // The slot of token `position`. REQUIRES: 0 <= position < num_tokens().
  KvSlot Locate(int position) const;

  absl::Span<const KvBlockId> blocks() const { return blocks_; }
  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  // Token positions the table covers ([0, num_tokens)).
  int num_tokens() const { return num_tokens_; }
  int block_size() const { return block_size_; }

 private:
  int block_size_;
  int num_tokens_ = 0;
  std::vector<KvBlockId> blocks_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_KV_CACHE_H_
