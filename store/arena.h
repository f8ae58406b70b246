// Arena: one contiguous region of host memory (registered once with the
// transport) carved into extents. Requests are rounded up to size classes
// (8 classes per power of two, at least kMinClass bytes: ≤ 12.5% internal
// waste) so freed extents fit later blocks of similar size; free extents
// are kept best-fit and coalesced with their neighbours on free.
//
// Thread safety: none; the owning tier serializes calls.
#ifndef KVRECALL_STORE_ARENA_H_
#define KVRECALL_STORE_ARENA_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "absl/status/statusor.h"

namespace kvrecall {

class Arena {
 public:
  static constexpr uint64_t kMinClass = 256;
  // The size class (bytes actually taken) of a request.
  static uint64_t ClassOf(uint64_t bytes);

  // Maps `capacity` bytes of anonymous memory (pages are backed when first
  // written, or all at once with `prefault`). RESOURCE_EXHAUSTED if the
  // mapping fails.
  // prefault: back every page now (MADV_POPULATE_WRITE, else a write per
  // page), so that puts do not pay the kernel's page zeroing on first touch.
  static absl::StatusOr<std::unique_ptr<Arena>> Create(uint64_t capacity, bool prefault = false);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Offset of a free extent of ClassOf(bytes), or nullopt if none fits.
  std::optional<uint64_t> Allocate(uint64_t bytes);
  // REQUIRES: (offset, bytes) came from Allocate(bytes) and is not yet freed.
  void Free(uint64_t offset, uint64_t bytes);

  uint8_t* base() const { return base_; }
  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_; }
  uint64_t largest_free() const;
  size_t free_extents() const { return by_offset_.size(); }

 private:
  Arena(uint8_t* base, uint64_t capacity);
  void AddFree(uint64_t offset, uint64_t size);
  void RemoveFree(uint64_t offset, uint64_t size);

  uint8_t* base_;
  uint64_t capacity_;
  uint64_t used_ = 0;
  std::map<uint64_t, uint64_t> by_offset_;          // offset -> size
  std::set<std::pair<uint64_t, uint64_t>> by_size_; // (size, offset)
};

}  // namespace kvrecall

#endif  // KVRECALL_STORE_ARENA_H_
