#include "store/ssd_tier.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "common/status.h"
#include "store/rocksdb_status.h"

namespace kvrecall {
namespace {

// 20-byte key: namespace then the block key, big-endian so a namespace's
// blocks are contiguous.
std::string EncodeKey(const TierKey& k) {
  std::string s(20, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(k.ns >> (24 - 8 * i));
  for (int i = 0; i < 8; ++i) s[4 + i] = static_cast<char>(k.key.hi >> (56 - 8 * i));
  for (int i = 0; i < 8; ++i) s[12 + i] = static_cast<char>(k.key.lo >> (56 - 8 * i));
  return s;
}

bool DecodeKey(const rocksdb::Slice& s, TierKey* k) {
  if (s.size() != 20) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  k->ns = 0, k->key = {};
  for (int i = 0; i < 4; ++i) k->ns = (k->ns << 8) | p[i];
  for (int i = 0; i < 8; ++i) k->key.hi = (k->key.hi << 8) | p[4 + i];
  for (int i = 0; i < 8; ++i) k->key.lo = (k->key.lo << 8) | p[12 + i];
  return true;
}

std::string EncodeSeq(uint64_t seq) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(seq >> (56 - 8 * i));
  return s;
}

uint64_t DecodeSeq(const rocksdb::Slice& s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) v = (v << 8) | uint8_t(s[i]);
  return v;
}

std::string EncodeMeta(uint64_t seq, uint64_t size) {
  std::string s;
  AppendLE<uint64_t>(&s, seq);
  AppendLE<uint64_t>(&s, size);
  return s;
}

// Every payload record ends with a trailer binding it to its key: a 4-byte
// magic and the 20-byte key. Reads skip RocksDB's own record checksum (a
// table-driven software CRC32c in Debian's build: 60% of a scattered row
// gather's CPU at 1M tokens); the block container's XXH3 checksum, verified
// by every reader, covers the payload, and the trailer covers what that
// checksum cannot: a record that is intact but belongs to another key (a
// misdirected index entry).
constexpr char kTrailerMagic[4] = {'K', 'V', 'R', '1'};
constexpr size_t kTrailerBytes = sizeof(kTrailerMagic) + 20;

bool DecodeMeta(const rocksdb::Slice& s, uint64_t* seq, uint64_t* size) {
  if (s.size() != 16) return false;
  *seq = LoadLE<uint64_t>(reinterpret_cast<const uint8_t*>(s.data()));
  *size = LoadLE<uint64_t>(reinterpret_cast<const uint8_t*>(s.data()) + 8);
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SsdTier>> SsdTier::Open(const SsdTierOptions& o) {
  if (o.path.empty()) return absl::InvalidArgumentError("SSD tier needs a path");
  if (o.budget_bytes == 0) return absl::InvalidArgumentError("SSD tier needs a byte budget");
  rocksdb::Options opts;
  opts.create_if_missing = true;
  opts.create_missing_column_families = true;
  opts.paranoid_checks = true;
  opts.allow_mmap_reads = o.mmap_reads;
  // Not MADV_RANDOM on the files: a read here is a whole blob (a block of
  // hundreds of KiB), and through mmap with random advice the kernel faults
  // it in 4 KiB at a time, each a separate disk read. Cold 1 MiB block reads
  // (page cache dropped): 0.03 GB/s with it, 0.44-1.0 GB/s without
  // (store_bench_analysis.md).
  opts.advise_random_on_open = false;
  rocksdb::ColumnFamilyOptions data_opts;
  data_opts.enable_blob_files = true;
  data_opts.min_blob_size = o.blob_min_bytes;
  data_opts.enable_blob_garbage_collection = true;
  data_opts.blob_garbage_collection_age_cutoff = 0.5;
  rocksdb::ColumnFamilyOptions small_opts;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{rocksdb::kDefaultColumnFamilyName, small_opts},
                                                      {"data", data_opts},
                                                      {"meta", small_opts},
                                                      {"order", small_opts}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  RETURN_IF_ERROR(FromRocksDbStatus(rocksdb::DB::Open(opts, o.path, cfs, &handles, &raw),
                                    absl::StrCat("open SSD tier at ", o.path)));
  std::unique_ptr<SsdTier> t(new SsdTier());
  t->options_ = o;
  t->db_.reset(raw);
  delete handles[0];  // default CF unused; the DB keeps its own handle
  t->data_ = handles[1], t->meta_ = handles[2], t->order_ = handles[3];
  // Recover accounting from the metadata.
  absl::MutexLock l(&t->mu_);
  std::unique_ptr<rocksdb::Iterator> it(t->db_->NewIterator(rocksdb::ReadOptions(), t->meta_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    uint64_t seq, size;
    if (!DecodeMeta(it->value(), &seq, &size)) return absl::DataLossError("SSD tier metadata is corrupted");
    t->bytes_ += size;
    ++t->blocks_;
    t->next_seq_ = std::max(t->next_seq_, seq + 1);
  }
  RETURN_IF_ERROR(FromRocksDbStatus(it->status(), "scan SSD tier metadata"));
  return t;
}

SsdTier::~SsdTier() {
  if (db_) {
    for (auto* h : {data_, meta_, order_}) {
      if (h) (void)db_->DestroyColumnFamilyHandle(h);
    }
    (void)db_->Close();
  }
}

absl::Status SsdTier::DeleteLocked(const TierKey& key, bool count_eviction) {
  const std::string k = EncodeKey(key);
  std::string meta;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_, k, &meta);
  if (s.IsNotFound()) return absl::OkStatus();
  RETURN_IF_ERROR(FromRocksDbStatus(s, "SSD tier metadata"));
  uint64_t seq, size;
  if (!DecodeMeta(meta, &seq, &size)) return absl::DataLossError("SSD tier metadata is corrupted");
  rocksdb::WriteBatch b;
  b.Delete(data_, k);
  b.Delete(meta_, k);
  b.Delete(order_, EncodeSeq(seq));
  RETURN_IF_ERROR(FromRocksDbStatus(db_->Write(rocksdb::WriteOptions(), &b), "SSD tier delete"));
  bytes_ -= std::min(bytes_, size);
  --blocks_;
  if (count_eviction) ++evictions_, evicted_bytes_ += size;
  return absl::OkStatus();
}

absl::Status SsdTier::Put(const TierKey& key, absl::Span<const uint8_t> bytes, bool sync) {
  if (bytes.size() > options_.budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("a ", bytes.size(), "-byte block exceeds the SSD budget"));
  }
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(DeleteLocked(key, false));
  // Make room first, oldest blocks first.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), order_));
  for (it->SeekToFirst(); it->Valid() && bytes_ + bytes.size() > options_.budget_bytes; it->Next()) {
    TierKey victim;
    if (!DecodeKey(it->value(), &victim)) return absl::DataLossError("SSD tier order record is corrupted");
    RETURN_IF_ERROR(DeleteLocked(victim, true));
  }
  RETURN_IF_ERROR(FromRocksDbStatus(it->status(), "SSD tier eviction scan"));
  const std::string k = EncodeKey(key);
  const uint64_t seq = next_seq_++;
  rocksdb::WriteBatch b;
  const rocksdb::Slice value_parts[3] = {
      rocksdb::Slice(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
      rocksdb::Slice(kTrailerMagic, sizeof(kTrailerMagic)), rocksdb::Slice(k)};
  const rocksdb::Slice key_slice(k);
  b.Put(data_, rocksdb::SliceParts(&key_slice, 1), rocksdb::SliceParts(value_parts, 3));
  b.Put(meta_, k, EncodeMeta(seq, bytes.size()));
  b.Put(order_, EncodeSeq(seq), k);
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  // Unsynced puts (write-back demotions) skip the WAL: the payload is written
  // once, to its blob file at flush, instead of twice. They may be lost in a
  // crash (they were never acknowledged as durable), never torn: a memtable
  // flush is atomic.
  wo.disableWAL = !sync;
  RETURN_IF_ERROR(FromRocksDbStatus(db_->Write(wo, &b), "SSD tier put"));
  bytes_ += bytes.size();
  ++blocks_;
  return absl::OkStatus();
}

absl::StatusOr<SsdTier::Read> SsdTier::GetPinned(const TierKey& key) const {
  const std::string k = EncodeKey(key);
  auto v = std::make_shared<rocksdb::PinnableSlice>();
  rocksdb::ReadOptions ro;
  ro.verify_checksums = false;  // see kTrailerMagic
  rocksdb::Status s = db_->Get(ro, data_, k, v.get());
  if (s.IsNotFound()) return absl::NotFoundError("not on SSD");
  RETURN_IF_ERROR(FromRocksDbStatus(s, "SSD tier get"));
  if (v->size() < kTrailerBytes || std::memcmp(v->data() + v->size() - kTrailerBytes, kTrailerMagic, 4) != 0 ||
      std::memcmp(v->data() + v->size() - 20, k.data(), 20) != 0) {
    return absl::DataLossError("SSD record does not belong to its key (torn or misdirected)");
  }
  Read r;
  r.bytes = absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(v->data()), v->size() - kTrailerBytes);
  r.holder = std::move(v);
  return r;
}

absl::StatusOr<std::string> SsdTier::Get(const TierKey& key) const {
  ASSIGN_OR_RETURN(const Read r, GetPinned(key));
  return std::string(reinterpret_cast<const char*>(r.bytes.data()), r.bytes.size());
}

bool SsdTier::Contains(const TierKey& key) const {
  std::string meta;
  return db_->Get(rocksdb::ReadOptions(), meta_, EncodeKey(key), &meta).ok();
}

absl::Status SsdTier::Delete(const TierKey& key) {
  absl::MutexLock l(&mu_);
  return DeleteLocked(key, false);
}

absl::Status SsdTier::DeleteNamespace(uint32_t ns) {
  absl::MutexLock l(&mu_);
  std::vector<TierKey> keys;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_));
  const std::string prefix = EncodeKey({ns, {}}).substr(0, 4);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    TierKey k;
    if (DecodeKey(it->key(), &k)) keys.push_back(k);
  }
  RETURN_IF_ERROR(FromRocksDbStatus(it->status(), "SSD tier namespace scan"));
  for (const TierKey& k : keys) RETURN_IF_ERROR(DeleteLocked(k, false));
  return absl::OkStatus();
}

absl::Status SsdTier::Flush() {
  // Unsynced puts live in the memtable (no WAL): flush them to blob files.
  RETURN_IF_ERROR(FromRocksDbStatus(db_->Flush(rocksdb::FlushOptions(), {data_, meta_, order_}), "SSD tier flush"));
  return FromRocksDbStatus(db_->FlushWAL(/*sync=*/true), "SSD tier WAL sync");
}

SsdTierStats SsdTier::stats() const {
  absl::MutexLock l(&mu_);
  SsdTierStats s;
  s.budget = options_.budget_bytes;
  s.bytes = bytes_;
  s.blocks = blocks_;
  s.evictions = evictions_;
  s.evicted_bytes = evicted_bytes_;
  return s;
}

}  // namespace kvrecall
