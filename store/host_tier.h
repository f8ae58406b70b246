// HostTier: blocks in one registered RAM arena (store/arena.h), keyed by
// (namespace, BlockKey), evicted by bytes with a pluggable policy
// (store/eviction.h).
//
// Writes are two-phase: Reserve carves space (evicting as needed), the
// writer fills it without holding any lock, Commit makes the block visible
// (replacing an older copy) or Abort returns the space. A reservation is
// never visible to readers. Readers Acquire a reference, copy, and Release;
// an entry that is read or pinned is never evicted, and an erased entry's
// space is freed when its last reader releases it.
//
// Thread safety: none; BlockStore serializes all calls under its mutex.
// Invariant: used bytes = Σ size classes of live, dead-but-read and
// reserved extents ≤ capacity.
#ifndef KVRECALL_STORE_HOST_TIER_H_
#define KVRECALL_STORE_HOST_TIER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/block_key.h"
#include "store/arena.h"
#include "store/eviction.h"

namespace kvrecall {

struct TierKey {
  uint32_t ns = 0;
  BlockKey key;
  friend bool operator==(const TierKey& a, const TierKey& b) { return a.ns == b.ns && a.key == b.key; }
  template <typename H>
  friend H AbslHashValue(H h, const TierKey& k) {
    return H::combine(std::move(h), k.ns, k.key.lo, k.key.hi);
  }
  uint64_t hash() const { return key.lo ^ (key.hi * 0x9e3779b97f4a7c15ull) ^ (uint64_t(ns) << 32); }
};

struct HostTierStats {
  uint64_t capacity = 0, used_bytes = 0, blocks = 0, evictions = 0, evicted_bytes = 0;
};

class HostTier {
 public:
  // Called with each evicted block's key and bytes before its space is
  // reused (write-back demotion).
  using DemoteFn = std::function<void(const TierKey&, absl::Span<const uint8_t>)>;

  static absl::StatusOr<std::unique_ptr<HostTier>> Create(uint64_t capacity, const std::string& policy,
                                                         bool prefault = false);

  struct Reservation {
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };
  // Space for `bytes`, evicting entries for which may_evict(key) holds (all
  // if null) in policy order. RESOURCE_EXHAUSTED if nothing more may go.
  absl::StatusOr<Reservation> Reserve(uint64_t bytes, const std::function<bool(const TierKey&)>& may_evict,
                                      const DemoteFn& demote);
  absl::Span<uint8_t> Data(const Reservation& r) { return {arena_->base() + r.offset, r.bytes}; }
  void Commit(const TierKey& key, const Reservation& r);
  void Abort(const Reservation& r);

  struct ReadRef {
    uint64_t id = 0;
    absl::Span<const uint8_t> bytes;
  };
  std::optional<ReadRef> Acquire(const TierKey& key);
  void Release(const ReadRef& ref);
  bool Contains(const TierKey& key) const { return index_.contains(key); }
  // Removes the entry (freed once unread). False if absent.
  bool Erase(const TierKey& key);
  // Pinned entries are never evicted. Pin/Unpin of an absent key: false.
  bool Pin(const TierKey& key);
  bool Unpin(const TierKey& key);
  bool Pinned(const TierKey& key) const;
  int PinCount(const TierKey& key) const;
  // Stored length of a present block.
  std::optional<uint64_t> LengthOf(const TierKey& key) const;
  // Evicts entries matching may_evict until done() (quota enforcement);
  // false if nothing more may go first.
  bool EvictUntil(const std::function<bool(const TierKey&)>& may_evict, const std::function<bool()>& done,
                  const DemoteFn& demote);

  HostTierStats stats() const;
  uint8_t* base() const { return arena_->base(); }
  uint64_t capacity() const { return arena_->capacity(); }
  // Bytes (size classes) a block of `bytes` takes.
  static uint64_t Charge(uint64_t bytes) { return Arena::ClassOf(bytes); }

 private:
  struct Entry {
    TierKey key;
    uint64_t offset = 0, length = 0;
    int readers = 0, pins = 0;
    bool dead = false;  // erased while read: freed on last Release
  };
  HostTier(std::unique_ptr<Arena> arena, std::unique_ptr<EvictionPolicy> policy)
      : arena_(std::move(arena)), policy_(std::move(policy)) {}
  bool EvictOne(const std::function<bool(const TierKey&)>& may_evict, const DemoteFn& demote);
  void Drop(uint64_t id);  // unlink from index; free now or on last release

  std::unique_ptr<Arena> arena_;
  std::unique_ptr<EvictionPolicy> policy_;
  uint64_t next_id_ = 1;
  absl::flat_hash_map<TierKey, uint64_t> index_;
  std::unordered_map<uint64_t, Entry> entries_;
  uint64_t evictions_ = 0, evicted_bytes_ = 0;
};

}  // namespace kvrecall

#endif  // KVRECALL_STORE_HOST_TIER_H_
