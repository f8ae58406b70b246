// Eviction policies over opaque entry ids, by bytes. The owner (a tier)
// reports inserts, hits and removals; Victim picks the next entry to evict
// among those the owner says may go (not pinned, not being read), and
// forgets it.
//
//   LRU      least recently used first.
//   S3-FIFO  (Yang et al., SOSP'23) a small FIFO (10% of the bytes) that
//            filters one-hit wonders, a main FIFO with 2-bit frequencies and
//            lazy promotion, and a ghost FIFO of recently evicted keys whose
//            return goes straight to main.
//
// Thread safety: none; the owning tier serializes calls.
#ifndef KVRECALL_STORE_EVICTION_H_
#define KVRECALL_STORE_EVICTION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace kvrecall {

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  virtual std::string name() const = 0;
  // `key_hash` identifies the content across re-insertions (ghost entries).
  virtual void Insert(uint64_t id, uint64_t key_hash, uint64_t bytes) = 0;
  virtual void Touch(uint64_t id) = 0;
  virtual void Remove(uint64_t id) = 0;
  // The next victim for which evictable(id) is true, removed from the
  // policy; nullopt if none may go.
  virtual std::optional<uint64_t> Victim(const std::function<bool(uint64_t)>& evictable) = 0;
  virtual size_t size() const = 0;
};

// "lru" or "s3fifo"; capacity_bytes sizes S3-FIFO's queues.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(const std::string& name, uint64_t capacity_bytes);

}  // namespace kvrecall

#endif  // KVRECALL_STORE_EVICTION_H_
