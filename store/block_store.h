// BlockStore: the store engine behind kvrecall-server and the embedded
// mode. Blocks (verified block containers) live in the host tier and,
// when configured, the SSD tier; every block belongs to a namespace.
//
// Guarantees (doc/design.md): a block is visible only after its whole
// payload arrived and verified; every read is verified again (a failed
// check drops the copy, counts a checksum failure, and reads as DATA_LOSS,
// which clients treat as a miss); a namespace can not see, probe, evict or
// delete another's blocks (keys are scoped by namespace id, not just
// salted); memory stays within host_bytes (arena) plus per-block metadata.
//
// Namespaces: created with the admin token given at start; each has a
// token (requests carry it: missing -> UNAUTHENTICATED, unknown ->
// PERMISSION_DENIED), a quota on host-tier bytes (a put over quota evicts
// the namespace's own blocks; pins beyond it are RESOURCE_EXHAUSTED) and a
// salt that clients mix into their BlockKeys.
//
// Thread safety: thread-safe. One mutex guards the host tier and the
// namespace table; payload copies and SSD I/O run outside it where the
// protocol allows (reserved or reader-held extents).
#ifndef KVRECALL_STORE_BLOCK_STORE_H_
#define KVRECALL_STORE_BLOCK_STORE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <thread>
#include <tuple>
#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "codec/block_key.h"
#include "codec/codec.h"
#include "codec/container.h"
#include "store/host_tier.h"
#include "store/ssd_tier.h"

namespace kvrecall {

enum class SsdWritePolicy { kWriteBack, kWriteThrough };
enum class FsyncPolicy { kDurable, kAlways, kNever };

struct StoreOptions {
  uint64_t host_bytes = 256ull << 20;
  std::string eviction = "s3fifo";  // lru | s3fifo
  // Blocks larger than this fraction of the host tier skip it (go to SSD
  // only, when there is one): one huge block must not flush the cache.
  double max_host_block_fraction = 0.25;
  // Back the whole host arena with memory at open (RSS = host_bytes from the
  // start) instead of on first touch: puts into fresh arena space otherwise
  // pay the kernel's page zeroing (8% of all cycles of 1 MiB puts over shm).
  bool prefault_host = false;
  std::string ssd_path;             // empty: no SSD tier
  uint64_t ssd_bytes = 0;
  SsdWritePolicy ssd_write = SsdWritePolicy::kWriteBack;
  FsyncPolicy fsync = FsyncPolicy::kDurable;  // kDurable: sync only durable puts
  std::string admin_token;          // empty: namespaces can only come from `namespaces`
};

struct NamespaceConfig {
  std::string name;
  std::string token;
  uint64_t quota_bytes = 0;
  std::string salt;
};

struct NamespaceStats {
  std::string name;
  uint64_t quota_bytes = 0, host_bytes = 0, pinned_bytes = 0;
};

struct StoreStats {
  HostTierStats host;
  SsdTierStats ssd;
  bool has_ssd = false;
  uint64_t puts = 0, put_bytes = 0, gets = 0, get_bytes = 0;
  uint64_t hits_host = 0, hits_ssd = 0, misses = 0;
  uint64_t checksum_failures = 0, rejected = 0, demotions = 0, promotions = 0, demotions_dropped = 0;
  std::vector<NamespaceStats> namespaces;
};

struct ExistsResult {
  uint32_t prefix = 0;         // leading keys present
  std::vector<bool> present;
};

class BlockStore;

// A put in progress: space reserved for one block, filled by the caller
// (a transport receives straight into it), then committed or dropped.
// Never visible to readers before CommitPut. Move-only; aborts on
// destruction unless committed.
class PendingPut {
 public:
  PendingPut() = default;
  PendingPut(PendingPut&& o) noexcept { *this = std::move(o); }
  PendingPut& operator=(PendingPut&& o) noexcept;
  ~PendingPut();
  absl::Span<uint8_t> data() { return data_; }

 private:
  friend class BlockStore;
  void Reset();
  BlockStore* store_ = nullptr;
  uint32_t ns_ = 0;
  BlockKey key_;
  bool durable_ = false;
  bool in_host_ = false;
  HostTier::Reservation reservation_;
  std::string buffer_;  // blocks that bypass the host tier
  absl::Span<uint8_t> data_;
};

// A verified block held for reading (a transport sends straight from it).
// Host-tier bytes stay valid and unevicted until the lease is destroyed.
class BlockLease {
 public:
  BlockLease() = default;
  BlockLease(BlockLease&& o) noexcept { *this = std::move(o); }
  BlockLease& operator=(BlockLease&& o) noexcept;
  ~BlockLease();
  absl::Span<const uint8_t> bytes() const { return bytes_; }
  // The block, parsed and verified when it was leased (spans into bytes());
  // for a row lease possibly partial: see BlockStore::LeaseRows.
  const BlockView& view() const { return view_; }

 private:
  friend class BlockStore;
  void Reset();
  BlockStore* store_ = nullptr;
  std::optional<HostTier::ReadRef> ref_;
  std::shared_ptr<const void> owned_;  // an SSD read's bytes (stable: moves keep view_ valid)
  absl::Span<const uint8_t> bytes_;
  BlockView view_;
};

// What a lease is for: whole-block reads promote SSD hits into the host tier;
// row reads (Gather, Attend) promote a block only when it is read again
// within the host tier's capacity of row-read traffic (in both tiers): only
// then would a cache of that size have kept it. Decode steps scan every block
// of a long sequence once per step; when the sequence is larger than the host
// tier, promoting its SSD blocks would copy each into RAM only to evict it
// (or a block the same step needs) before the next step reads it. A request
// that reads rows of kScanBlocks or more blocks at once is such a scan
// (kScan): it never promotes. (Reuse distance alone does not catch it: the
// order in which concurrent workers reach a step's blocks varies from step to
// step, so a block read late in one step and early in the next is reused
// after half a sequence.)
enum class LeaseFor { kBlock, kRows, kScan };
inline constexpr size_t kScanBlocks = 16;
// The lease kind for a request that reads rows of `blocks` blocks.
inline LeaseFor RowReadOf(size_t blocks) { return blocks >= kScanBlocks ? LeaseFor::kScan : LeaseFor::kRows; }

class BlockStore {
 public:
  static absl::StatusOr<std::unique_ptr<BlockStore>> Open(const StoreOptions& options,
                                                          const std::vector<NamespaceConfig>& namespaces = {});

  // Admin (token = StoreOptions::admin_token).
  absl::Status CreateNamespace(absl::string_view admin_token, const NamespaceConfig& config);
  absl::Status SetQuota(absl::string_view admin_token, absl::string_view name, uint64_t quota_bytes);

  // The namespace id for a request token.
  absl::StatusOr<uint32_t> Authenticate(absl::string_view token) const;
  // The salt clients mix into BlockKeys of this namespace.
  absl::StatusOr<std::string> Salt(uint32_t ns) const;

  // Stores a verified copy. INVALID_ARGUMENT/DATA_LOSS if `block` is not a
  // valid container; RESOURCE_EXHAUSTED if it can not fit (quota, budget,
  // everything pinned); FAILED_PRECONDITION for a durable put without SSD.
  // durable: acknowledged only once on stable storage (SSD, fsynced).
  absl::Status Put(uint32_t ns, const BlockKey& key, absl::Span<const uint8_t> block, bool durable);
  // The two halves of Put, for callers that fill the space themselves.
  absl::StatusOr<PendingPut> BeginPut(uint32_t ns, const BlockKey& key, size_t bytes, bool durable);
  absl::Status CommitPut(PendingPut put);
  // A verified block to read from in place (NOT_FOUND on a miss, DATA_LOSS
  // if the stored copy failed verification).
  absl::StatusOr<BlockLease> Lease(uint32_t ns, const BlockKey& key, LeaseFor use = LeaseFor::kBlock);
  // Whether leasing `keys` would look any of them up on the SSD tier (one
  // is not in RAM and there is an SSD tier), without reading anything.
  // Servers use it to decide where a read runs.
  bool ReadsSsd(uint32_t ns, absl::Span<const BlockKey> keys);
  // Whether a put with this durability writes the SSD tier before it is
  // acknowledged (durable, or write-through).
  bool PutWritesSsd(bool durable) const {
    return ssd_ != nullptr && (durable || options_.ssd_write == SsdWritePolicy::kWriteThrough);
  }
  // A row lease for reading `rows` with the block's codec (*codec): the bytes
  // those rows decode from are verified (for a block with chunk checksums,
  // only those; else the whole block). A copy that fails is dropped and
  // counted; a bad host copy falls back to the SSD copy (NOT_FOUND without
  // one, as for Lease), a bad SSD copy is DATA_LOSS. INVALID_ARGUMENT for rows
  // outside the block.
  absl::StatusOr<BlockLease> LeaseRows(uint32_t ns, const BlockKey& key, absl::Span<const int> rows,
                                       std::unique_ptr<KvCodec>* codec, LeaseFor use = LeaseFor::kRows);
  // Copies a verified block into `dst`; returns its size. NOT_FOUND on a
  // miss; DATA_LOSS if the stored copy failed verification (it is dropped);
  // OUT_OF_RANGE if dst is too small (nothing is written past dst).
  absl::StatusOr<size_t> Get(uint32_t ns, const BlockKey& key, absl::Span<uint8_t> dst);
  absl::StatusOr<std::string> Get(uint32_t ns, const BlockKey& key);
  // Size of a present block, NOT_FOUND otherwise (for sizing buffers).
  ExistsResult Exists(uint32_t ns, absl::Span<const BlockKey> chain);
  // True if a block was removed (from every tier).
  absl::StatusOr<bool> Delete(uint32_t ns, const BlockKey& key);
  // Pinned blocks stay in the host tier (promoted from SSD if needed).
  absl::Status Pin(uint32_t ns, const BlockKey& key);
  absl::Status Unpin(uint32_t ns, const BlockKey& key);
  // Token rows of one block, decoded by its codec: K then V, each
  // [layer_count][kv_heads][rows][head_dim] f32.
  // use: RowReadOf(blocks the request reads rows of).
  absl::StatusOr<std::vector<float>> GatherRows(uint32_t ns, const BlockKey& key, absl::Span<const int> rows,
                                                LeaseFor use = LeaseFor::kRows);

  // Near-data attention: for every (layer, KV head, query head of its
  // group), exact attention of the query over the union of the given rows
  // of the given blocks (decoded by their codecs), as output + log-sum-exp
  // (the partial result a client merges with its own). queries:
  // [layer_count][kv_heads][group][head_dim] f32, all blocks of one shape.
  // out: same shape; lse: [layer_count][kv_heads][group]. INVALID_ARGUMENT
  // for mismatched shapes or rows; NOT_FOUND / DATA_LOSS as for Get.
  struct AttendItem {
    BlockKey key;
    std::vector<int> rows;
  };
  absl::Status Attend(uint32_t ns, const std::vector<AttendItem>& items, int group, float scale,
                      absl::Span<const float> queries, std::vector<float>* out, std::vector<float>* lse);
  // GatherRows for each item, in order (a result per item; reading several
  // blocks this way overlaps each block's memory reads with the previous
  // block's work, as Attend does). use: RowReadOf(items.size()). An item
  // whose rows would take the results past `max_bytes` (f32 bytes of the
  // items decoded so far) is not decoded: RESOURCE_EXHAUSTED.
  std::vector<absl::StatusOr<std::vector<float>>> GatherRows(uint32_t ns, absl::Span<const AttendItem> items,
                                                             uint64_t max_bytes);

  void CountRejected() { rejected_.fetch_add(1, std::memory_order_relaxed); }
  StoreStats Stats() const;
  // Syncs the SSD tier's log (used by drain/shutdown).
  absl::Status Flush();

 private:
  friend class PendingPut;
  friend class BlockLease;
  struct Namespace {
    NamespaceConfig config;
    uint64_t host_bytes = 0;
    uint64_t pinned_bytes = 0;
  };
  BlockStore(const StoreOptions& o, std::unique_ptr<HostTier> host, std::unique_ptr<SsdTier> ssd)
      : options_(o), host_(std::move(host)), ssd_(std::move(ssd)) {}
  absl::Status AddNamespaceLocked(const NamespaceConfig& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops a host copy that failed verification (the SSD copy, if any, stays).
  void DropHostCopy(const TierKey& tk);
  // The two halves of LeaseRows. OpenRows leases the block and lists the
  // bytes `rows` decode from (`ranges`, or why not in `ranges_status`),
  // verifying nothing beyond what Lease does; with `prefetch` it asks the
  // memory system for those bytes, so that a reader of many blocks opens the
  // next block before it verifies and reads this one. FinishRows verifies an
  // opened lease, handling a bad copy as LeaseRows documents.
  struct OpenedRows {
    BlockLease lease;
    std::unique_ptr<KvCodec> codec;
    std::vector<absl::Span<const uint8_t>> ranges;
    absl::Status ranges_status;
  };
  absl::StatusOr<OpenedRows> OpenRows(uint32_t ns, const BlockKey& key, absl::Span<const int> rows, LeaseFor use,
                                      bool prefetch);
  absl::StatusOr<BlockLease> FinishRows(uint32_t ns, const BlockKey& key, absl::Span<const int> rows,
                                        std::unique_ptr<KvCodec>* codec, LeaseFor use,
                                        absl::StatusOr<OpenedRows> opened);
  // Row leases of `items` in order, handed to fn(index, lease, codec); the
  // next block is opened with a prefetch before fn runs for this one. Stops
  // at the first error fn returns and returns it.
  absl::Status ReadRowsInOrder(uint32_t ns, absl::Span<const AttendItem> items, LeaseFor use,
                               absl::FunctionRef<absl::Status(size_t, absl::StatusOr<BlockLease>,
                                                              std::unique_ptr<KvCodec>)> fn);
  absl::Status CheckAdmin(absl::string_view token) const;
  // Host-tier insert of verified bytes (two-phase), evicting as needed.
  // clean: the SSD tier holds the same bytes (a promotion).
  absl::Status InsertHost(uint32_t ns, const BlockKey& key, absl::Span<const uint8_t> block, bool clean);
  // Quota + budget eviction and a host reservation for `bytes`.
  absl::StatusOr<HostTier::Reservation> ReserveHost(uint32_t ns, size_t bytes);
  // Publishes a filled, verified reservation.
  void CommitHost(uint32_t ns, const BlockKey& key, const HostTier::Reservation& r, bool clean);
  // Drops an uncommitted reservation and its quota charge.
  void AbortHostCharged(uint32_t ns, const HostTier::Reservation& r);
  void ReleaseRef(const HostTier::ReadRef& ref);
  HostTier::DemoteFn Demoter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool FitsHost(size_t bytes) const { return bytes <= options_.max_host_block_fraction * options_.host_bytes; }

  const StoreOptions options_;
  mutable absl::Mutex mu_;
  std::unique_ptr<HostTier> host_ ABSL_PT_GUARDED_BY(mu_);
  std::unique_ptr<SsdTier> ssd_;  // thread-safe itself
  std::map<uint32_t, Namespace> namespaces_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint32_t> by_token_ ABSL_GUARDED_BY(mu_);
  // Host blocks promoted from the SSD tier, which still holds them: evicting
  // one needs no write-back.
  absl::flat_hash_set<TierKey> clean_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> puts_{0}, put_bytes_{0}, gets_{0}, get_bytes_{0}, hits_host_{0}, hits_ssd_{0}, misses_{0},
      checksum_failures_{0}, rejected_{0}, demotions_{0}, promotions_{0}, demotions_dropped_{0};

  // Write-back demotion runs off the request path: an evicted block is
  // copied (under mu_, a memcpy) into this bounded queue and written to the
  // SSD tier by demote_thread_; reads find it here meanwhile. Over
  // kMaxPendingDemotionBytes the evicting request waits for the queue to
  // drain (backpressure: the store takes data no faster than its SSD tier
  // absorbs it); only after kMaxDemotionWait is the demotion dropped (the
  // block just evicted) and counted. Clean blocks (promoted, still on the
  // SSD tier) are not written back at all.
  static constexpr uint64_t kMaxPendingDemotionBytes = 64ull << 20;
  static constexpr std::chrono::seconds kMaxDemotionWait{30};
  void DemoteLoop();
  // Row reads' promotion ghosts (LeaseFor::kRows): the row-read clock (bytes
  // of blocks row-read so far, both tiers) at each SSD block's last row read,
  // kept while within the host tier's capacity of the clock's present value.
  // now: the clock just after this read.
  bool SecondRowTouch(const TierKey& key, uint64_t now);
  std::atomic<uint64_t> row_clock_{0};
  std::mutex ghost_mu_;
  std::deque<std::pair<TierKey, uint64_t>> ghost_fifo_;  // guarded by ghost_mu_
  absl::flat_hash_map<TierKey, uint64_t> ghosts_;        // guarded by ghost_mu_
  std::mutex demote_mu_;
  std::condition_variable demote_cv_;
  std::deque<std::pair<TierKey, std::string>> demote_queue_;  // guarded by demote_mu_
  absl::flat_hash_map<TierKey, std::string*> demote_pending_; // guarded by demote_mu_
  uint64_t demote_bytes_ = 0;                                 // guarded by demote_mu_
  int demote_writing_ = 0;                                    // guarded by demote_mu_
  bool demote_stop_ = false;                                  // guarded by demote_mu_
  std::thread demote_thread_;

 public:
  ~BlockStore();
};

}  // namespace kvrecall

#endif  // KVRECALL_STORE_BLOCK_STORE_H_
