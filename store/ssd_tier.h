// SsdTier: blocks on local SSD in RocksDB with integrated blob files
// (payloads in blob files, keys and metadata in the LSM; blob garbage
// collection on), under a byte budget with FIFO eviction by insertion order.
//
// Atomicity: a block's payload, metadata and eviction-order record go in
// one WriteBatch, so after a crash a block is either wholly present or
// absent; readers verify every payload (block container checksum) anyway.
// Each payload record carries its key in a trailer, checked on every read
// (DATA_LOSS when a record does not belong to the key asked for); RocksDB's
// own record CRC is not recomputed on reads.
// Durability: a Put with sync=true returns after RocksDB's WAL is fsynced;
// such a block survives kill -9 and power loss. Unsynced puts skip the WAL
// (written once, to the blob file, when the memtable flushes) and may be
// lost in a crash, never torn.
//
// Thread safety: thread-safe (one internal mutex orders writes and budget
// accounting; reads go to RocksDB without it).
#ifndef KVRECALL_STORE_SSD_TIER_H_
#define KVRECALL_STORE_SSD_TIER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "store/host_tier.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace kvrecall {

struct SsdTierOptions {
  std::string path;
  uint64_t budget_bytes = 0;   // payload bytes kept; older blocks evicted beyond it
  uint64_t blob_min_bytes = 4096;  // payloads at least this big go to blob files
  // Read files through mmap: a read is one copy out of the page cache
  // instead of a pread into RocksDB's buffer and a copy out of that.
  bool mmap_reads = true;
};

struct SsdTierStats {
  uint64_t budget = 0, bytes = 0, blocks = 0, evictions = 0, evicted_bytes = 0;
};

class SsdTier {
 public:
  // Opens (creating if needed) and recovers the byte accounting from the
  // metadata. Errors from RocksDB are converted (store/rocksdb_status.h).
  static absl::StatusOr<std::unique_ptr<SsdTier>> Open(const SsdTierOptions& options);
  ~SsdTier();

  // Stores (replacing) a block; evicts the oldest blocks beyond the budget.
  // RESOURCE_EXHAUSTED for a block larger than the budget; RocksDB errors
  // (disk full → RESOURCE_EXHAUSTED, I/O → UNAVAILABLE) otherwise.
  absl::Status Put(const TierKey& key, absl::Span<const uint8_t> bytes, bool sync);
  // NOT_FOUND for a miss; DATA_LOSS for a record that is not this key's. The
  // payload itself is not verified here (callers check its container).
  absl::StatusOr<std::string> Get(const TierKey& key) const;
  // As Get, without copying the payload out of RocksDB: `bytes` stays valid
  // while `holder` lives.
  struct Read {
    std::shared_ptr<const void> holder;
    absl::Span<const uint8_t> bytes;
  };
  absl::StatusOr<Read> GetPinned(const TierKey& key) const;
  bool Contains(const TierKey& key) const;
  // OK whether or not the key existed.
  absl::Status Delete(const TierKey& key);
  // Deletes every block of a namespace.
  absl::Status DeleteNamespace(uint32_t ns);
  absl::Status Flush();

  SsdTierStats stats() const;

 private:
  SsdTier() = default;
  absl::Status DeleteLocked(const TierKey& key, bool count_eviction) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SsdTierOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* data_ = nullptr;   // key -> payload (blob files)
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;   // key -> u64 seq | u64 size
  rocksdb::ColumnFamilyHandle* order_ = nullptr;  // big-endian seq -> key
  mutable absl::Mutex mu_;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t blocks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evicted_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvrecall

#endif  // KVRECALL_STORE_SSD_TIER_H_
