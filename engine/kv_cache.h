// The paged K/V cache: a pool of fixed-size blocks (each holds the keys and
// values of `block_size` consecutive tokens of one sequence), a free list
// over them (KvBlockAllocator), per-sequence block tables (BlockTable), and
// the storage of the K/V floats (KvCache, allocated by the model on its
// backend, laid out as PagedKvLayout says). KvCacheManager owns all three
// for the engine: the scheduler reserves and releases blocks through it, the
// model reads the tables (through the step's chunks) and the storage.
#ifndef MEMSERVE_ENGINE_KV_CACHE_H_
#define MEMSERVE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/dtype.h"
#include "engine/runtime/tensor.h"

namespace memserve {

class Model;

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

// Blocks of `block_size` tokens needed to hold `total_tokens` tokens (ceil
// division; 0 for total_tokens <= 0). REQUIRES: block_size >= 1.
int KvBlocksNeeded(int total_tokens, int block_size);

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

// Key/value storage for every layer, in two backend buffers (K and V): per
// layer [num_blocks, block_size, kv_dim] of dtype() (PagedKvLayout; F32, or
// BF16 with --kv_cache_dtype on a backend that has it). Made only by
// the Model (Model::NewCache, Model::NewPagedCache), which alone reads and
// writes it. A cache from NewCache holds one sequence in one block of
// `capacity` tokens and tracks its length (Model::Forward); one from
// NewPagedCache holds many sequences whose block tables the caller keeps
// (Model::ForwardBatch; in the engine, a KvCacheManager). Valid only with
// the Model that created it (and not after that model is destroyed).
class KvCache {
 public:
  // Single-sequence caches: tokens stored (the position of the next token).
  int length() const { return length_; }
  int capacity() const { return layout_.num_blocks * layout_.block_size; }
  // Forgets all tokens; the next Forward starts at position 0.
  void Clear() { length_ = 0; }
  const PagedKvLayout& layout() const { return layout_; }
  // The element type of the stored keys and values (F32 or BF16).
  DType dtype() const { return dtype_; }
  // Distinct for every KvCache of the process (the model's step graphs are
  // valid for the cache they were captured with).
  uint64_t id() const { return id_; }

 private:
  friend class Model;
  KvCache(const void* owner, const PagedKvLayout& layout, DType dtype, std::unique_ptr<Buffer> k,
          std::unique_ptr<Buffer> v);
  // Layer `layer`'s keys / values: [num_blocks * block_size, kv_dim] of dtype().
  Tensor keys(int layer) const { return LayerView(k_.get(), layer); }
  Tensor values(int layer) const { return LayerView(v_.get(), layer); }
  Tensor LayerView(Buffer* buffer, int layer) const;

  const void* owner_;
  PagedKvLayout layout_;
  DType dtype_;
  uint64_t id_;
  int length_ = 0;
  std::unique_ptr<Buffer> k_;  // [n_layers, num_blocks, block_size, kv_dim]
  std::unique_ptr<Buffer> v_;
};

// The one owner of the engine's paged K/V cache: the block pool, the block
// table of every sequence that holds blocks (by sequence id), and the
// storage. Block ids are handed out exactly as a KvBlockAllocator does, and
// each table is a BlockTable, so the same calls give the same blocks.
//
// Thread-safety: not thread-safe. The engine guards it with its mutex, like
// the scheduler that changes it; as only the engine thread changes it, that
// thread may read tables and storage without the mutex (the forward pass).
class KvCacheManager {
 public:
  // Bookkeeping only, no storage (storage() is null): planning without a
  // model, as the scheduler's tests do. REQUIRES: num_blocks >= 0,
  // block_size >= 1.
  KvCacheManager(int num_blocks, int block_size);
  // Owns `storage` (a paged cache from Model::NewPagedCache); the pool has
  // its layout's num_blocks blocks of block_size tokens.
  // REQUIRES: storage != nullptr.
  explicit KvCacheManager(std::unique_ptr<KvCache> storage);
  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  // Grows the block table of `sequence` so it covers positions
  // [0, total_tokens), allocating only the missing blocks (the first
  // Reserve of a sequence creates its table). All or nothing: when too few
  // blocks are free, ResourceExhausted is returned and nothing changes. A
  // total at or below num_tokens(sequence) is a no-op (tables never
  // shrink). InvalidArgument for a negative total.
  absl::Status Reserve(uint64_t sequence, int total_tokens);
  // Returns every block of `sequence` to the pool and forgets its table; a
  // no-op for a sequence that holds none.
  void Release(uint64_t sequence);

  // The block table of `sequence`, in position order (empty when it holds
  // no blocks). Valid until the next Reserve or Release of that sequence;
  // other sequences' calls do not move it.
  absl::Span<const KvBlockId> blocks(uint64_t sequence) const;
  // Token positions the table of `sequence` covers ([0, num_tokens)); 0
  // when it holds no blocks.
  int num_tokens(uint64_t sequence) const;
  // Blocks needed to hold `total_tokens` tokens (ceil division; 0 for <= 0).
  int BlocksNeeded(int total_tokens) const;

  // Sequences holding at least one block.
  int num_sequences() const { return static_cast<int>(tables_.size()); }
  int block_size() const { return block_size_; }
  int num_blocks() const { return allocator_.num_blocks(); }
  int num_free() const { return allocator_.num_free(); }
  int num_used() const { return allocator_.num_used(); }

  // The K/V storage the model reads and writes, or null (bookkeeping only).
  KvCache* storage() const { return storage_.get(); }

 private:
  const int block_size_;
  KvBlockAllocator allocator_;
  absl::node_hash_map<uint64_t, BlockTable> tables_;  // only sequences holding blocks
  std::unique_ptr<KvCache> storage_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_KV_CACHE_H_
