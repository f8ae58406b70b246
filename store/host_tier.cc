#include "store/host_tier.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace kvrecall {

absl::StatusOr<std::unique_ptr<HostTier>> HostTier::Create(uint64_t capacity, const std::string& policy, bool prefault) {
  ASSIGN_OR_RETURN(std::unique_ptr<EvictionPolicy> p, MakeEvictionPolicy(policy, capacity));
  ASSIGN_OR_RETURN(std::unique_ptr<Arena> a, Arena::Create(capacity, prefault));
  return std::unique_ptr<HostTier>(new HostTier(std::move(a), std::move(p)));
}

bool HostTier::EvictOne(const std::function<bool(const TierKey&)>& may_evict, const DemoteFn& demote) {
  std::optional<uint64_t> victim = policy_->Victim([&](uint64_t id) {
    const Entry& e = entries_.at(id);
    return e.readers == 0 && e.pins == 0 && (!may_evict || may_evict(e.key));
  });
  if (!victim) return false;
  Entry& e = entries_.at(*victim);
  if (demote) demote(e.key, {arena_->base() + e.offset, e.length});
  ++evictions_;
  evicted_bytes_ += e.length;
  index_.erase(e.key);
  arena_->Free(e.offset, e.length);
  entries_.erase(*victim);
  return true;
}

absl::StatusOr<HostTier::Reservation> HostTier::Reserve(uint64_t bytes,
                                                        const std::function<bool(const TierKey&)>& may_evict,
                                                        const DemoteFn& demote) {
  if (bytes == 0 || Arena::ClassOf(bytes) > arena_->capacity()) {
    return absl::ResourceExhaustedError(absl::StrCat("a ", bytes, "-byte block does not fit the ", arena_->capacity(),
                                                     "-byte host tier"));
  }
  for (;;) {
    if (std::optional<uint64_t> off = arena_->Allocate(bytes)) return Reservation{*off, bytes};
    if (!EvictOne(may_evict, demote)) {
      return absl::ResourceExhaustedError(absl::StrCat("host tier full: no evictable block frees ", bytes, " bytes (",
                                                       arena_->used(), " of ", arena_->capacity(), " in use)"));
    }
  }
}

void HostTier::Commit(const TierKey& key, const Reservation& r) {
  Erase(key);  // blocks are immutable: a re-put replaces the copy
  const uint64_t id = next_id_++;
  Entry e;
  e.key = key;
  e.offset = r.offset;
  e.length = r.bytes;
  entries_.emplace(id, e);
  index_[key] = id;
  policy_->Insert(id, key.hash(), Arena::ClassOf(r.bytes));
}

void HostTier::Abort(const Reservation& r) { arena_->Free(r.offset, r.bytes); }

std::optional<HostTier::ReadRef> HostTier::Acquire(const TierKey& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  Entry& e = entries_.at(it->second);
  ++e.readers;
  policy_->Touch(it->second);
  return ReadRef{it->second, {arena_->base() + e.offset, e.length}};
}

void HostTier::Release(const ReadRef& ref) {
  auto it = entries_.find(ref.id);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  if (--e.readers == 0 && e.dead) {
    arena_->Free(e.offset, e.length);
    entries_.erase(it);
  }
}

void HostTier::Drop(uint64_t id) {
  Entry& e = entries_.at(id);
  index_.erase(e.key);
  policy_->Remove(id);
  if (e.readers > 0) {
    e.dead = true;
    return;
  }
  arena_->Free(e.offset, e.length);
  entries_.erase(id);
}

bool HostTier::Erase(const TierKey& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  Drop(it->second);
  return true;
}

bool HostTier::Pin(const TierKey& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  ++entries_.at(it->second).pins;
  return true;
}

bool HostTier::Unpin(const TierKey& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  Entry& e = entries_.at(it->second);
  if (e.pins == 0) return false;
  --e.pins;
  return true;
}

bool HostTier::Pinned(const TierKey& key) const {
  auto it = index_.find(key);
  return it != index_.end() && entries_.at(it->second).pins > 0;
}

int HostTier::PinCount(const TierKey& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? 0 : entries_.at(it->second).pins;
}

std::optional<uint64_t> HostTier::LengthOf(const TierKey& key) const {
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  return entries_.at(it->second).length;
}

bool HostTier::EvictUntil(const std::function<bool(const TierKey&)>& may_evict, const std::function<bool()>& done,
                          const DemoteFn& demote) {
  while (!done()) {
    if (!EvictOne(may_evict, demote)) return false;
  }
  return true;
}

HostTierStats HostTier::stats() const {
  HostTierStats s;
  s.capacity = arena_->capacity();
  s.used_bytes = arena_->used();
  s.blocks = index_.size();
  s.evictions = evictions_;
  s.evicted_bytes = evicted_bytes_;
  return s;
}

}  // namespace kvrecall
