#include "store/block_store.h"

#include <cctype>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/attention.h"
#include "codec/codec.h"
#include "codec/container.h"
#include "common/hash.h"
#include "common/status.h"

namespace kvrecall {
namespace {

absl::Status Verify(absl::Span<const uint8_t> bytes) { return ParseBlock(bytes).status(); }

}  // namespace

absl::StatusOr<std::unique_ptr<BlockStore>> BlockStore::Open(const StoreOptions& o,
                                                             const std::vector<NamespaceConfig>& namespaces) {
  if (!(o.max_host_block_fraction > 0 && o.max_host_block_fraction <= 1)) {
    return absl::InvalidArgumentError("max_host_block_fraction must be in (0, 1]");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<HostTier> host, HostTier::Create(o.host_bytes, o.eviction, o.prefault_host));
  std::unique_ptr<SsdTier> ssd;
  if (!o.ssd_path.empty()) {
    SsdTierOptions so;
    so.path = o.ssd_path;
    so.budget_bytes = o.ssd_bytes;
    ASSIGN_OR_RETURN(ssd, SsdTier::Open(so));
  }
  std::unique_ptr<BlockStore> s(new BlockStore(o, std::move(host), std::move(ssd)));
  if (s->ssd_ && o.ssd_write == SsdWritePolicy::kWriteBack) {
    BlockStore* self = s.get();
    s->demote_thread_ = std::thread([self] { self->DemoteLoop(); });
  }
  absl::MutexLock l(&s->mu_);
  for (const NamespaceConfig& c : namespaces) RETURN_IF_ERROR(s->AddNamespaceLocked(c));
  return s;
}

absl::Status BlockStore::CheckAdmin(absl::string_view token) const {
  if (token.empty()) return absl::UnauthenticatedError("admin token missing");
  if (options_.admin_token.empty() || token != options_.admin_token) {
    return absl::PermissionDeniedError("wrong admin token");
  }
  return absl::OkStatus();
}

absl::Status BlockStore::AddNamespaceLocked(const NamespaceConfig& c) {
  if (c.name.empty() || c.name.size() > 128) return absl::InvalidArgumentError("namespace name must be 1-128 bytes");
  for (char ch : c.name) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-' && ch != '.') {
      return absl::InvalidArgumentError("namespace names use letters, digits, '_', '-' and '.'");
    }
  }
  if (c.token.size() < 8 || c.token.size() > 256) return absl::InvalidArgumentError("namespace token must be 8-256 bytes");
  if (c.quota_bytes == 0) return absl::InvalidArgumentError("namespace quota must be > 0");
  for (const auto& [id, n] : namespaces_) {
    if (n.config.name == c.name) return absl::AlreadyExistsError(absl::StrCat("namespace '", c.name, "' exists"));
  }
  if (by_token_.contains(c.token)) return absl::AlreadyExistsError("token already belongs to a namespace");
  // The id scopes the namespace's keys in every tier, SSD included, so it
  // must not depend on creation order: it is a hash of the name (stable
  // across restarts; a collision is refused).
  uint32_t id = static_cast<uint32_t>(Checksum64(c.name.data(), c.name.size()));
  if (id == 0) id = 1;
  if (namespaces_.count(id)) return absl::AlreadyExistsError("namespace name collides with another's id; pick another");
  namespaces_[id].config = c;
  by_token_[c.token] = id;
  return absl::OkStatus();
}

absl::Status BlockStore::CreateNamespace(absl::string_view admin_token, const NamespaceConfig& c) {
  RETURN_IF_ERROR(CheckAdmin(admin_token));
  absl::MutexLock l(&mu_);
  return AddNamespaceLocked(c);
}

absl::Status BlockStore::SetQuota(absl::string_view admin_token, absl::string_view name, uint64_t quota) {
  RETURN_IF_ERROR(CheckAdmin(admin_token));
  if (quota == 0) return absl::InvalidArgumentError("quota must be > 0");
  absl::MutexLock l(&mu_);
  for (auto& [id, n] : namespaces_) {
    if (n.config.name != name) continue;
    if (quota < n.pinned_bytes) return absl::FailedPreconditionError("quota below the namespace's pinned bytes");
    n.config.quota_bytes = quota;
    const uint32_t ns = id;
    Namespace* np = &n;
    host_->EvictUntil([ns](const TierKey& k) { return k.ns == ns; }, [np] { return np->host_bytes <= np->config.quota_bytes; },
                      Demoter());
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("no namespace '", name, "'"));
}

absl::StatusOr<uint32_t> BlockStore::Authenticate(absl::string_view token) const {
  if (token.empty()) return absl::UnauthenticatedError("request carries no namespace token");
  absl::MutexLock l(&mu_);
  auto it = by_token_.find(token);
  if (it == by_token_.end()) return absl::PermissionDeniedError("unknown namespace token");
  return it->second;
}

absl::StatusOr<std::string> BlockStore::Salt(uint32_t ns) const {
  absl::MutexLock l(&mu_);
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) return absl::PermissionDeniedError("unknown namespace");
  return it->second.config.salt;
}

HostTier::DemoteFn BlockStore::Demoter() {
  return [this](const TierKey& k, absl::Span<const uint8_t> bytes) {
    auto it = namespaces_.find(k.ns);
    if (it != namespaces_.end()) it->second.host_bytes -= std::min(it->second.host_bytes, HostTier::Charge(bytes.size()));
    const bool clean = clean_.erase(k) > 0;
    if (!ssd_ || options_.ssd_write != SsdWritePolicy::kWriteBack) return;
    if (clean && ssd_->Contains(k)) return;  // the SSD tier still has these bytes
    std::unique_lock<std::mutex> l(demote_mu_);
    if (demote_pending_.contains(k)) return;  // the same key (same bytes) is on its way already
    // Backpressure: wait (holding the store lock: nothing else is admitted
    // meanwhile) until the writer has made room.
    const bool room = demote_cv_.wait_for(l, kMaxDemotionWait, [&] {
      return demote_stop_ || demote_bytes_ == 0 || demote_bytes_ + bytes.size() <= kMaxPendingDemotionBytes;
    });
    if (!room || demote_stop_) {
      demotions_dropped_.fetch_add(1);
      return;
    }
    demote_queue_.emplace_back(k, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    demote_pending_[k] = &demote_queue_.back().second;
    demote_bytes_ += bytes.size();
    demote_cv_.notify_all();  // several waiters with different conditions share the variable
  };
}

void BlockStore::DemoteLoop() {
  std::unique_lock<std::mutex> l(demote_mu_);
  for (;;) {
    demote_cv_.wait(l, [&] { return demote_stop_ || !demote_queue_.empty(); });
    if (demote_queue_.empty()) return;  // stopping, drained
    std::pair<TierKey, std::string>& front = demote_queue_.front();
    if (front.second.empty()) {  // cancelled by a Delete
      demote_queue_.pop_front();
      demote_cv_.notify_all();  // Flush may be waiting for the queue to empty
      continue;
    }
    // Write the front entry without the lock; it stays findable meanwhile.
    ++demote_writing_;
    l.unlock();
    const bool ok = ssd_->Put(front.first, AsBytes(front.second), options_.fsync == FsyncPolicy::kAlways).ok();
    l.lock();
    --demote_writing_;
    if (ok) demotions_.fetch_add(1);
    demote_pending_.erase(front.first);
    demote_bytes_ -= front.second.size();
    demote_queue_.pop_front();
    demote_cv_.notify_all();
  }
}

BlockStore::~BlockStore() {
  {
    std::lock_guard<std::mutex> l(demote_mu_);
    demote_stop_ = true;
  }
  demote_cv_.notify_all();
  if (demote_thread_.joinable()) demote_thread_.join();
}

absl::StatusOr<HostTier::Reservation> BlockStore::ReserveHost(uint32_t ns, size_t bytes) {
  const uint64_t charge = HostTier::Charge(bytes);
  absl::MutexLock l(&mu_);
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) return absl::PermissionDeniedError("unknown namespace");
  Namespace* n = &it->second;
  if (charge > n->config.quota_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("a ", bytes, "-byte block exceeds the namespace quota"));
  }
  if (!host_->EvictUntil([ns](const TierKey& k) { return k.ns == ns; },
                         [n, charge] { return n->host_bytes + charge <= n->config.quota_bytes; }, Demoter())) {
    return absl::ResourceExhaustedError("namespace quota full of pinned or busy blocks");
  }
  ASSIGN_OR_RETURN(HostTier::Reservation r, host_->Reserve(bytes, nullptr, Demoter()));
  n->host_bytes += charge;  // charged from the reservation on, so concurrent puts respect the quota
  return r;
}

void BlockStore::CommitHost(uint32_t ns, const BlockKey& key, const HostTier::Reservation& r, bool clean) {
  const TierKey tk{ns, key};
  absl::MutexLock l(&mu_);
  if (clean) clean_.insert(tk);
  else clean_.erase(tk);
  auto it = namespaces_.find(ns);
  if (std::optional<uint64_t> old = host_->LengthOf(tk)) {  // replaced (a re-put of the same key)
    if (host_->PinCount(tk) > 0) it->second.pinned_bytes -= std::min(it->second.pinned_bytes, HostTier::Charge(*old));
    it->second.host_bytes -= std::min(it->second.host_bytes, HostTier::Charge(*old));
  }
  host_->Commit(tk, r);
}

void BlockStore::AbortHostCharged(uint32_t ns, const HostTier::Reservation& r) {
  absl::MutexLock l(&mu_);
  host_->Abort(r);
  auto it = namespaces_.find(ns);
  if (it != namespaces_.end()) it->second.host_bytes -= std::min(it->second.host_bytes, HostTier::Charge(r.bytes));
}

void BlockStore::ReleaseRef(const HostTier::ReadRef& ref) {
  absl::MutexLock l(&mu_);
  host_->Release(ref);
}

absl::Status BlockStore::InsertHost(uint32_t ns, const BlockKey& key, absl::Span<const uint8_t> block, bool clean) {
  ASSIGN_OR_RETURN(HostTier::Reservation r, ReserveHost(ns, block.size()));
  uint8_t* dst;
  {
    absl::MutexLock l(&mu_);
    dst = host_->Data(r).data();
  }
  std::memcpy(dst, block.data(), block.size());
  CommitHost(ns, key, r, clean);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// PendingPut and BlockLease.

PendingPut& PendingPut::operator=(PendingPut&& o) noexcept {
  if (this != &o) {
    Reset();
    store_ = o.store_, ns_ = o.ns_, key_ = o.key_, durable_ = o.durable_, in_host_ = o.in_host_;
    reservation_ = o.reservation_;
    buffer_ = std::move(o.buffer_);
    data_ = in_host_ ? o.data_ : absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(buffer_.data()), buffer_.size());
    o.store_ = nullptr, o.in_host_ = false, o.data_ = {};
  }
  return *this;
}

PendingPut::~PendingPut() { Reset(); }

void PendingPut::Reset() {
  if (store_ && in_host_) store_->AbortHostCharged(ns_, reservation_);
  store_ = nullptr, in_host_ = false, data_ = {};
  buffer_.clear();
}

BlockLease& BlockLease::operator=(BlockLease&& o) noexcept {
  if (this != &o) {
    Reset();
    store_ = o.store_;
    ref_ = o.ref_;
    owned_ = std::move(o.owned_);
    bytes_ = o.bytes_;
    view_ = std::move(o.view_);
    o.store_ = nullptr, o.ref_.reset(), o.bytes_ = {}, o.view_ = {};
  }
  return *this;
}

BlockLease::~BlockLease() { Reset(); }

void BlockLease::Reset() {
  if (store_ && ref_) store_->ReleaseRef(*ref_);
  store_ = nullptr, ref_.reset(), bytes_ = {}, view_ = {};
  owned_.reset();
}

absl::StatusOr<PendingPut> BlockStore::BeginPut(uint32_t ns, const BlockKey& key, size_t bytes, bool durable) {
  if (durable && !ssd_) return absl::FailedPreconditionError("durable puts need an SSD tier (--ssd_path)");
  if (bytes == 0) return absl::InvalidArgumentError("empty block");
  {
    absl::MutexLock l(&mu_);
    if (!namespaces_.count(ns)) return absl::PermissionDeniedError("unknown namespace");
  }
  const bool fits = FitsHost(bytes);
  if (!fits && !ssd_) {
    return absl::ResourceExhaustedError(absl::StrCat("a ", bytes, "-byte block is over the host tier's admission limit"));
  }
  PendingPut p;
  p.ns_ = ns, p.key_ = key, p.durable_ = durable;
  if (fits) {
    absl::StatusOr<HostTier::Reservation> r = ReserveHost(ns, bytes);
    if (r.ok()) {
      p.store_ = this;
      p.in_host_ = true;
      p.reservation_ = *r;
      absl::MutexLock l(&mu_);
      p.data_ = host_->Data(*r);
      return p;
    }
    if (!ssd_) return r.status();
  }
  p.store_ = this;
  p.buffer_.resize(bytes);
  p.data_ = absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(p.buffer_.data()), bytes);
  return p;
}

absl::Status BlockStore::CommitPut(PendingPut p) {
  if (p.store_ != this) return absl::InvalidArgumentError("not a pending put of this store");
  const absl::Span<const uint8_t> bytes = p.data_;
  if (absl::Status s = Verify(bytes); !s.ok()) {
    rejected_.fetch_add(1);
    return s;  // p aborts on destruction
  }
  const bool to_ssd = ssd_ && (p.durable_ || options_.ssd_write == SsdWritePolicy::kWriteThrough || !p.in_host_);
  if (to_ssd) RETURN_IF_ERROR(ssd_->Put({p.ns_, p.key_}, bytes, p.durable_ || options_.fsync == FsyncPolicy::kAlways));
  if (p.in_host_) {
    CommitHost(p.ns_, p.key_, p.reservation_, /*clean=*/to_ssd);  // written through: nothing to write back
    p.in_host_ = false;
  }
  p.store_ = nullptr;
  puts_.fetch_add(1);
  put_bytes_.fetch_add(bytes.size());
  return absl::OkStatus();
}

absl::Status BlockStore::Put(uint32_t ns, const BlockKey& key, absl::Span<const uint8_t> block, bool durable) {
  if (absl::Status s = Verify(block); !s.ok()) {  // refuse before evicting anything for it
    rejected_.fetch_add(1);
    return s;
  }
  ASSIGN_OR_RETURN(PendingPut p, BeginPut(ns, key, block.size(), durable));
  std::memcpy(p.data().data(), block.data(), block.size());
  return CommitPut(std::move(p));
}

bool BlockStore::SecondRowTouch(const TierKey& key, uint64_t now) {
  const uint64_t cap = options_.host_bytes;
  std::lock_guard<std::mutex> l(ghost_mu_);
  bool near = false;
  if (auto it = ghosts_.find(key); it != ghosts_.end()) {
    near = now - it->second <= cap;
    ghosts_.erase(it);
  }
  if (near) return true;
  ghosts_[key] = now;
  ghost_fifo_.emplace_back(key, now);
  while (!ghost_fifo_.empty() && now - ghost_fifo_.front().second > cap) {
    const auto& [k, stamp] = ghost_fifo_.front();
    auto it = ghosts_.find(k);
    if (it != ghosts_.end() && it->second == stamp) ghosts_.erase(it);
    ghost_fifo_.pop_front();
  }
  return false;
}

bool BlockStore::ReadsSsd(uint32_t ns, absl::Span<const BlockKey> keys) {
  if (!ssd_) return false;
  absl::MutexLock l(&mu_);
  for (const BlockKey& k : keys) {
    if (!host_->Contains({ns, k})) return true;
  }
  return false;
}

absl::StatusOr<BlockLease> BlockStore::Lease(uint32_t ns, const BlockKey& key, LeaseFor use) {
  gets_.fetch_add(1);
  const TierKey tk{ns, key};
  BlockLease lease;
  {
    absl::MutexLock l(&mu_);
    if (!namespaces_.count(ns)) return absl::PermissionDeniedError("unknown namespace");
    if (std::optional<HostTier::ReadRef> ref = host_->Acquire(tk)) {
      lease.store_ = this;
      lease.ref_ = ref;
      lease.bytes_ = ref->bytes;
    }
  }
  // Row reads verify only what they read (LeaseRows); everything else the whole block.
  const bool rows = use != LeaseFor::kBlock;
  auto parse = rows ? ParseBlockForRows : ParseBlock;
  if (lease.ref_) {
    if (absl::StatusOr<BlockView> view = parse(lease.bytes_); view.ok()) {
      lease.view_ = *std::move(view);
      if (rows) row_clock_.fetch_add(lease.bytes_.size());  // host hits count toward reuse distance too
      hits_host_.fetch_add(1);
      get_bytes_.fetch_add(lease.bytes_.size());
      return lease;
    }
    // A bad copy in memory: drop it and try the SSD copy.
    lease.Reset();
    checksum_failures_.fetch_add(1);
    DropHostCopy(tk);
  }
  if (ssd_) {
    absl::StatusOr<SsdTier::Read> got = absl::NotFoundError("not pending");
    {
      std::lock_guard<std::mutex> l(demote_mu_);
      auto it = demote_pending_.find(tk);
      if (it != demote_pending_.end()) {  // on its way to the SSD
        auto copy = std::make_shared<std::string>(*it->second);
        got = SsdTier::Read{copy, AsBytes(*copy)};
      }
    }
    if (!got.ok()) got = ssd_->GetPinned(tk);
    if (got.ok()) {
      lease.store_ = this;
      lease.owned_ = std::move(got->holder);
      lease.bytes_ = got->bytes;
      absl::StatusOr<BlockView> view = parse(lease.bytes_);
      if (!view.ok()) {
        checksum_failures_.fetch_add(1);
        (void)ssd_->Delete(tk);
        return absl::DataLossError(absl::StrCat("stored block failed verification: ", view.status().message()));
      }
      lease.view_ = *std::move(view);
      hits_ssd_.fetch_add(1);
      get_bytes_.fetch_add(lease.bytes_.size());
      const uint64_t now = rows ? row_clock_.fetch_add(lease.bytes_.size()) + lease.bytes_.size() : 0;
      const bool promote = use == LeaseFor::kBlock || (use == LeaseFor::kRows && SecondRowTouch(tk, now));
      if (promote && FitsHost(lease.bytes_.size()) && InsertHost(ns, key, lease.bytes_, /*clean=*/true).ok()) {
        promotions_.fetch_add(1);
      }
      return lease;
    }
    if (got.status().code() == absl::StatusCode::kDataLoss) checksum_failures_.fetch_add(1);
    if (got.status().code() != absl::StatusCode::kNotFound) return got.status();
  }
  misses_.fetch_add(1);
  return absl::NotFoundError("miss");
}

void BlockStore::DropHostCopy(const TierKey& tk) {
  absl::MutexLock l(&mu_);
  if (std::optional<uint64_t> len = host_->LengthOf(tk)) {
    Namespace& nsr = namespaces_.at(tk.ns);
    if (host_->PinCount(tk) > 0) nsr.pinned_bytes -= std::min(nsr.pinned_bytes, HostTier::Charge(*len));
    nsr.host_bytes -= std::min(nsr.host_bytes, HostTier::Charge(*len));
    host_->Erase(tk);
    clean_.erase(tk);
  }
}

absl::StatusOr<BlockLease> BlockStore::LeaseRows(uint32_t ns, const BlockKey& key, absl::Span<const int> rows,
                                                 std::unique_ptr<KvCodec>* codec, LeaseFor use) {
  return FinishRows(ns, key, rows, codec, use, OpenRows(ns, key, rows, use, /*prefetch=*/false));
}

absl::StatusOr<BlockStore::OpenedRows> BlockStore::OpenRows(uint32_t ns, const BlockKey& key,
                                                            absl::Span<const int> rows, LeaseFor use, bool prefetch) {
  OpenedRows o;
  ASSIGN_OR_RETURN(o.lease, Lease(ns, key, use));
  ASSIGN_OR_RETURN(o.codec, CodecForBlock(o.lease.view()));
  if (o.lease.view().partial) {
    o.ranges_status = o.codec->RowByteRanges(o.lease.view(), rows, &o.ranges);
    if (prefetch && o.ranges_status.ok()) PrefetchBlockRanges(o.lease.view(), o.ranges);
  }
  return o;
}

absl::StatusOr<BlockLease> BlockStore::FinishRows(uint32_t ns, const BlockKey& key, absl::Span<const int> rows,
                                                  std::unique_ptr<KvCodec>* codec, LeaseFor use,
                                                  absl::StatusOr<OpenedRows> opened) {
  const TierKey tk{ns, key};
  for (int attempt = 0;; ++attempt) {
    if (attempt > 0) opened = OpenRows(ns, key, rows, use, /*prefetch=*/false);
    if (!opened.ok()) return opened.status();
    BlockLease& lease = opened->lease;
    absl::Status s;  // a fully verified view needs nothing more
    if (lease.view().partial) {
      s = opened->ranges_status;
      if (s.ok()) {
        s = VerifyBlockRanges(lease.view(), opened->ranges);
      } else if (s.code() == absl::StatusCode::kUnimplemented) {
        s = ParseBlock(lease.bytes()).status();  // a codec that can't list its rows' bytes: verify them all
      }
    }
    if (s.code() != absl::StatusCode::kDataLoss) {
      if (!s.ok()) return s;  // rows outside the block
      *codec = std::move(opened->codec);
      return std::move(lease);
    }
    checksum_failures_.fetch_add(1);
    const bool from_host = lease.ref_.has_value();
    lease.Reset();
    if (from_host) {
      DropHostCopy(tk);
      if (attempt == 0) continue;  // the SSD copy, if there is one
    } else if (ssd_) {
      (void)ssd_->Delete(tk);
    }
    return absl::DataLossError(absl::StrCat("stored block failed verification: ", s.message()));
  }
}

absl::StatusOr<size_t> BlockStore::Get(uint32_t ns, const BlockKey& key, absl::Span<uint8_t> dst) {
  ASSIGN_OR_RETURN(BlockLease lease, Lease(ns, key));
  const size_t n = lease.bytes().size();
  if (n > dst.size()) return absl::OutOfRangeError(absl::StrCat("block is ", n, " bytes, buffer ", dst.size()));
  std::memcpy(dst.data(), lease.bytes().data(), n);
  return n;
}

absl::StatusOr<std::string> BlockStore::Get(uint32_t ns, const BlockKey& key) {
  ASSIGN_OR_RETURN(BlockLease lease, Lease(ns, key));
  return std::string(reinterpret_cast<const char*>(lease.bytes().data()), lease.bytes().size());
}

ExistsResult BlockStore::Exists(uint32_t ns, absl::Span<const BlockKey> chain) {
  ExistsResult r;
  r.present.resize(chain.size());
  bool known = false;
  {
    absl::MutexLock l(&mu_);
    known = namespaces_.count(ns) > 0;
    for (size_t i = 0; known && i < chain.size(); ++i) r.present[i] = host_->Contains({ns, chain[i]});
  }
  if (known && ssd_) {
    std::lock_guard<std::mutex> l(demote_mu_);
    for (size_t i = 0; i < chain.size(); ++i) {
      if (!r.present[i]) r.present[i] = demote_pending_.contains(TierKey{ns, chain[i]});
    }
  }
  for (size_t i = 0; known && ssd_ && i < chain.size(); ++i) {
    if (!r.present[i]) r.present[i] = ssd_->Contains({ns, chain[i]});
  }
  while (r.prefix < chain.size() && r.present[r.prefix]) ++r.prefix;
  return r;
}

absl::StatusOr<bool> BlockStore::Delete(uint32_t ns, const BlockKey& key) {
  const TierKey tk{ns, key};
  bool removed = false;
  {
    absl::MutexLock l(&mu_);
    auto it = namespaces_.find(ns);
    if (it == namespaces_.end()) return absl::PermissionDeniedError("unknown namespace");
    if (std::optional<uint64_t> len = host_->LengthOf(tk)) {
      if (host_->PinCount(tk) > 0) it->second.pinned_bytes -= std::min(it->second.pinned_bytes, HostTier::Charge(*len));
      it->second.host_bytes -= std::min(it->second.host_bytes, HostTier::Charge(*len));
      removed = host_->Erase(tk);
    }
    clean_.erase(tk);
  }
  if (ssd_) {
    std::unique_lock<std::mutex> l(demote_mu_);
    // A demotion being written right now finishes first (then the SSD copy
    // is deleted below); one still queued is cancelled.
    demote_cv_.wait(l, [&] {
      return !(demote_writing_ > 0 && !demote_queue_.empty() && demote_queue_.front().first == tk);
    });
    auto it = demote_pending_.find(tk);
    if (it != demote_pending_.end()) {
      demote_bytes_ -= it->second->size();
      it->second->clear();
      demote_pending_.erase(it);
      removed = true;
    }
  }
  if (ssd_ && ssd_->Contains(tk)) {
    RETURN_IF_ERROR(ssd_->Delete(tk));
    removed = true;
  }
  return removed;
}

absl::Status BlockStore::Pin(uint32_t ns, const BlockKey& key) {
  const TierKey tk{ns, key};
  for (int attempt = 0; attempt < 2; ++attempt) {
    {
      absl::MutexLock l(&mu_);
      auto it = namespaces_.find(ns);
      if (it == namespaces_.end()) return absl::PermissionDeniedError("unknown namespace");
      if (std::optional<uint64_t> len = host_->LengthOf(tk)) {
        const uint64_t charge = HostTier::Charge(*len);
        if (host_->PinCount(tk) == 0) {
          if (it->second.pinned_bytes + charge > it->second.config.quota_bytes) {
            return absl::ResourceExhaustedError("pinning this block would exceed the namespace quota");
          }
          it->second.pinned_bytes += charge;
        }
        host_->Pin(tk);
        return absl::OkStatus();
      }
    }
    if (attempt > 0 || !ssd_) break;
    absl::StatusOr<std::string> got = ssd_->Get(tk);  // promote, then pin
    if (!got.ok()) break;
    const absl::Span<const uint8_t> b(reinterpret_cast<const uint8_t*>(got->data()), got->size());
    if (!Verify(b).ok() || !FitsHost(b.size())) break;
    RETURN_IF_ERROR(InsertHost(ns, key, b, /*clean=*/true));
  }
  return absl::NotFoundError("no such block to pin");
}

absl::Status BlockStore::Unpin(uint32_t ns, const BlockKey& key) {
  const TierKey tk{ns, key};
  absl::MutexLock l(&mu_);
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) return absl::PermissionDeniedError("unknown namespace");
  std::optional<uint64_t> len = host_->LengthOf(tk);
  if (!len || !host_->Unpin(tk)) return absl::NotFoundError("block is not pinned");
  if (host_->PinCount(tk) == 0) it->second.pinned_bytes -= std::min(it->second.pinned_bytes, HostTier::Charge(*len));
  return absl::OkStatus();
}

namespace {

// Bytes of `rows` rows of a block decoded to f32 K and V.
uint64_t DecodedRowsBytes(const BlockView& view, size_t rows) {
  const BlockHeader& h = view.header;
  return 2 * sizeof(float) * uint64_t(h.layer_count) * h.layout.num_kv_heads * rows * h.layout.head_dim;
}

// The rows of a verified row lease decoded: K then V, each
// [layer_count][kv_heads][rows][head_dim] f32.
absl::StatusOr<std::vector<float>> DecodeLeasedRows(const BlockView& view, const KvCodec& codec,
                                                    absl::Span<const int> rows) {
  std::vector<float> out(DecodedRowsBytes(view, rows.size()) / sizeof(float));
  RETURN_IF_ERROR(codec.DecodeRows(view, rows, out.data(), out.data() + out.size() / 2));
  return out;
}

}  // namespace

absl::StatusOr<std::vector<float>> BlockStore::GatherRows(uint32_t ns, const BlockKey& key, absl::Span<const int> rows,
                                                          LeaseFor use) {
  std::unique_ptr<KvCodec> codec;
  ASSIGN_OR_RETURN(BlockLease lease, LeaseRows(ns, key, rows, &codec, use));
  return DecodeLeasedRows(lease.view(), *codec, rows);
}

absl::Status BlockStore::ReadRowsInOrder(
    uint32_t ns, absl::Span<const AttendItem> items, LeaseFor use,
    absl::FunctionRef<absl::Status(size_t, absl::StatusOr<BlockLease>, std::unique_ptr<KvCodec>)> fn) {
  if (items.empty()) return absl::OkStatus();
  // One block ahead: the next block is leased and its rows' bytes requested
  // from memory before this block's are verified and used, so that scattered
  // rows arrive while the CPU works instead of one miss at a time. (An error
  // of the next block is its own result, handed over when its turn comes.)
  absl::StatusOr<OpenedRows> next = OpenRows(ns, items[0].key, items[0].rows, use, /*prefetch=*/true);
  for (size_t it = 0; it < items.size(); ++it) {
    absl::StatusOr<OpenedRows> opened = std::move(next);
    if (it + 1 < items.size()) next = OpenRows(ns, items[it + 1].key, items[it + 1].rows, use, /*prefetch=*/true);
    std::unique_ptr<KvCodec> codec;
    absl::StatusOr<BlockLease> lease = FinishRows(ns, items[it].key, items[it].rows, &codec, use, std::move(opened));
    RETURN_IF_ERROR(fn(it, std::move(lease), std::move(codec)));
  }
  return absl::OkStatus();
}

std::vector<absl::StatusOr<std::vector<float>>> BlockStore::GatherRows(uint32_t ns,
                                                                        absl::Span<const AttendItem> items,
                                                                        uint64_t max_bytes) {
  std::vector<absl::StatusOr<std::vector<float>>> got;
  got.reserve(items.size());
  uint64_t used = 0;
  (void)ReadRowsInOrder(ns, items, RowReadOf(items.size()),
                        [&](size_t it, absl::StatusOr<BlockLease> lease, std::unique_ptr<KvCodec> codec) {
                          if (!lease.ok()) return got.push_back(lease.status()), absl::OkStatus();
                          const uint64_t bytes = DecodedRowsBytes(lease->view(), items[it].rows.size());
                          if (used + bytes > max_bytes) {
                            got.push_back(absl::ResourceExhaustedError("gathered rows past the reply limit"));
                          } else {
                            got.push_back(DecodeLeasedRows(lease->view(), *codec, items[it].rows));
                            if (got.back().ok()) used += bytes;
                          }
                          return absl::OkStatus();
                        });
  return got;
}

absl::Status BlockStore::Attend(uint32_t ns, const std::vector<AttendItem>& items, int group, float scale,
                               absl::Span<const float> queries, std::vector<float>* out, std::vector<float>* lse) {
  if (items.empty() || group < 1) return absl::InvalidArgumentError("attend: no rows or bad group");
  int L = 0, H = 0, d = 0;
  std::vector<float> part, part_lse, scratch;
  return ReadRowsInOrder(
      ns, items, RowReadOf(items.size()),
      [&](size_t it, absl::StatusOr<BlockLease> got, std::unique_ptr<KvCodec> codec) -> absl::Status {
        if (!got.ok()) return got.status();
        const BlockView& view = got->view();
        const BlockHeader& h = view.header;
        if (it == 0) {
          L = static_cast<int>(h.layer_count), H = h.layout.num_kv_heads, d = h.layout.head_dim;
          if (queries.size() != size_t(L) * H * group * d) {
            return absl::InvalidArgumentError(absl::StrCat("attend: ", queries.size(), " query floats for blocks of ",
                                                           L, " layers x ", H, " KV heads x group ", group, " x ", d));
          }
          out->assign(queries.size(), 0.0f);
          lse->assign(size_t(L) * H * group, -INFINITY);
          part.resize(queries.size()), part_lse.resize(lse->size());
        } else if (static_cast<int>(h.layer_count) != L || h.layout.num_kv_heads != H || h.layout.head_dim != d) {
          return absl::InvalidArgumentError("attend: blocks of different shapes");
        }
        const std::vector<int>& rows = items[it].rows;
        if (rows.empty()) return absl::OkStatus();
        // INVALID_ARGUMENT for bad rows; f16 rows are read in place.
        RETURN_IF_ERROR(codec->AttendRows(view, rows, queries.data(), group, scale, part.data(), part_lse.data(),
                                          &scratch));
        for (size_t i = 0; i < part_lse.size(); ++i) {
          MergeAttention(out->data() + i * d, &(*lse)[i], part.data() + i * d, part_lse[i], d);
        }
        return absl::OkStatus();
      });
}

StoreStats BlockStore::Stats() const {
  StoreStats s;
  {
    absl::MutexLock l(&mu_);
    s.host = host_->stats();
    for (const auto& [id, n] : namespaces_) {
      s.namespaces.push_back({n.config.name, n.config.quota_bytes, n.host_bytes, n.pinned_bytes});
    }
  }
  if (ssd_) s.ssd = ssd_->stats(), s.has_ssd = true;
  s.puts = puts_, s.put_bytes = put_bytes_, s.gets = gets_, s.get_bytes = get_bytes_;
  s.hits_host = hits_host_, s.hits_ssd = hits_ssd_, s.misses = misses_;
  s.checksum_failures = checksum_failures_, s.rejected = rejected_, s.demotions = demotions_,
  s.promotions = promotions_, s.demotions_dropped = demotions_dropped_;
  return s;
}

absl::Status BlockStore::Flush() {
  if (!ssd_) return absl::OkStatus();
  {  // pending demotions first
    std::unique_lock<std::mutex> l(demote_mu_);
    demote_cv_.wait(l, [&] { return demote_queue_.empty() && demote_writing_ == 0; });
  }
  return ssd_->Flush();
}

}  // namespace kvrecall
