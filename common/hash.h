// Hashing on xxHash: XXH3-64 for checksums, XXH3-128 for keys and
// fingerprints. Stable across machines and releases (xxHash's XXH3 output is
// frozen since 0.8.0), so values may be persisted.
#ifndef KVRECALL_COMMON_HASH_H_
#define KVRECALL_COMMON_HASH_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvrecall {

struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const Hash128& a, const Hash128& b) {
    return a.lo == b.lo && a.hi == b.hi;
  }
  friend bool operator!=(const Hash128& a, const Hash128& b) { return !(a == b); }
  friend bool operator<(const Hash128& a, const Hash128& b) {
    return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
  }
  template <typename H>
  friend H AbslHashValue(H h, const Hash128& x) {
    return H::combine(std::move(h), x.lo, x.hi);
  }
  // 32 lowercase hex digits, high half first.
  std::string ToHex() const;
};

// XXH3-64 of `data` (seed 0).
uint64_t Checksum64(const void* data, size_t size);
// The same value, always through the library's (SSE2) build; for tests.
uint64_t Checksum64Portable(const void* data, size_t size);
inline uint64_t Checksum64(absl::Span<const uint8_t> data) {
  return Checksum64(data.data(), data.size());
}

// XXH3-128 of `data` (seed 0).
Hash128 Hash128Of(const void* data, size_t size);
inline Hash128 Hash128Of(absl::string_view data) {
  return Hash128Of(data.data(), data.size());
}

// Incremental XXH3-64; gives the same value as Checksum64 over the
// concatenation of all updates. Not thread-safe.
class Checksum64Stream {
 public:
  Checksum64Stream();
  ~Checksum64Stream();
  Checksum64Stream(const Checksum64Stream&) = delete;
  Checksum64Stream& operator=(const Checksum64Stream&) = delete;

  void Update(const void* data, size_t size);
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t, owned
};

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_HASH_H_
