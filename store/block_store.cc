#include "store/block_store.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/codec.h"
#include "codec/container.h"
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
  ASSIGN_OR_RETURN(std::unique_ptr<HostTier> host, HostTier::Create(o.host_bytes, o.eviction));
  std::unique_ptr<SsdTier> ssd;
  if (!o.ssd_path.empty()) {
    SsdTierOptions so;
    so.path = o.ssd_path;
    so.budget_bytes = o.ssd_bytes;
    ASSIGN_OR_RETURN(ssd, SsdTier::Open(so));
  }
  std::unique_ptr<BlockStore> s(new BlockStore(o, std::move(host), std::move(ssd)));
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
  if (c.token.size() < 8 || c.token.size() > 256) return absl::InvalidArgumentError("namespace token must be 8-256 bytes");
  if (c.quota_bytes == 0) return absl::InvalidArgumentError("namespace quota must be > 0");
  for (const auto& [id, n] : namespaces_) {
    if (n.config.name == c.name) return absl::AlreadyExistsError(absl::StrCat("namespace '", c.name, "' exists"));
  }
  if (by_token_.contains(c.token)) return absl::AlreadyExistsError("token already belongs to a namespace");
  const uint32_t id = next_ns_++;
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
    if (ssd_ && options_.ssd_write == SsdWritePolicy::kWriteBack) {
      if (ssd_->Put(k, bytes, options_.fsync == FsyncPolicy::kAlways).ok()) demotions_.fetch_add(1);
    }
  };
}

absl::Status BlockStore::InsertHost(uint32_t ns, const BlockKey& key, absl::Span<const uint8_t> block) {
  const TierKey tk{ns, key};
  const uint64_t charge = HostTier::Charge(block.size());
  HostTier::Reservation r;
  {
    absl::MutexLock l(&mu_);
    auto it = namespaces_.find(ns);
    if (it == namespaces_.end()) return absl::PermissionDeniedError("unknown namespace");
    Namespace* n = &it->second;
    if (charge > n->config.quota_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("a ", block.size(), "-byte block exceeds the namespace quota"));
    }
    if (!host_->EvictUntil([ns](const TierKey& k) { return k.ns == ns; },
                           [n, charge] { return n->host_bytes + charge <= n->config.quota_bytes; }, Demoter())) {
      return absl::ResourceExhaustedError("namespace quota full of pinned or busy blocks");
    }
    ASSIGN_OR_RETURN(r, host_->Reserve(block.size(), nullptr, Demoter()));
  }
  // The reservation is ours alone: fill and verify it without the lock.
  absl::Span<uint8_t> dst;
  {
    absl::MutexLock l(&mu_);
    dst = host_->Data(r);
  }
  std::memcpy(dst.data(), block.data(), block.size());
  const absl::Status ok = Verify(dst);
  absl::MutexLock l(&mu_);
  if (!ok.ok()) {
    host_->Abort(r);
    checksum_failures_.fetch_add(1);
    return ok;
  }
  auto it = namespaces_.find(ns);
  if (std::optional<uint64_t> old = host_->LengthOf(tk)) {  // replaced (a re-put of the same key)
    if (host_->PinCount(tk) > 0) it->second.pinned_bytes -= std::min(it->second.pinned_bytes, HostTier::Charge(*old));
    it->second.host_bytes -= std::min(it->second.host_bytes, HostTier::Charge(*old));
  }
  host_->Commit(tk, r);
  it->second.host_bytes += charge;
  return absl::OkStatus();
}

absl::Status BlockStore::Put(uint32_t ns, const BlockKey& key, absl::Span<const uint8_t> block, bool durable) {
  if (absl::Status s = Verify(block); !s.ok()) {
    rejected_.fetch_add(1);
    return s;
  }
  if (durable && !ssd_) return absl::FailedPreconditionError("durable puts need an SSD tier (--ssd_path)");
  {
    absl::MutexLock l(&mu_);
    if (!namespaces_.count(ns)) return absl::PermissionDeniedError("unknown namespace");
  }
  const bool fits = FitsHost(block.size());
  const bool to_ssd = ssd_ && (durable || options_.ssd_write == SsdWritePolicy::kWriteThrough || !fits);
  if (!fits && !ssd_) {
    return absl::ResourceExhaustedError(absl::StrCat("a ", block.size(), "-byte block is over the host tier's admission limit"));
  }
  if (to_ssd) {
    RETURN_IF_ERROR(ssd_->Put({ns, key}, block, durable || options_.fsync == FsyncPolicy::kAlways));
  }
  if (fits) {
    absl::Status s = InsertHost(ns, key, block);
    if (!s.ok() && !to_ssd) return s;  // on SSD it is stored anyway
  }
  puts_.fetch_add(1);
  put_bytes_.fetch_add(block.size());
  return absl::OkStatus();
}

absl::StatusOr<size_t> BlockStore::Get(uint32_t ns, const BlockKey& key, absl::Span<uint8_t> dst) {
  gets_.fetch_add(1);
  const TierKey tk{ns, key};
  std::optional<HostTier::ReadRef> ref;
  {
    absl::MutexLock l(&mu_);
    if (!namespaces_.count(ns)) return absl::PermissionDeniedError("unknown namespace");
    ref = host_->Acquire(tk);
  }
  if (ref) {
    const size_t n = ref->bytes.size();
    const bool fits = n <= dst.size();
    if (fits) std::memcpy(dst.data(), ref->bytes.data(), n);
    {
      absl::MutexLock l(&mu_);
      host_->Release(*ref);
    }
    if (!fits) return absl::OutOfRangeError(absl::StrCat("block is ", n, " bytes, buffer ", dst.size()));
    if (Verify(dst.subspan(0, n)).ok()) {
      hits_host_.fetch_add(1);
      get_bytes_.fetch_add(n);
      return n;
    }
    // A bad copy in memory: drop it and try the SSD copy.
    checksum_failures_.fetch_add(1);
    absl::MutexLock l(&mu_);
    if (std::optional<uint64_t> len = host_->LengthOf(tk)) {
      Namespace& nsr = namespaces_.at(ns);
      if (host_->PinCount(tk) > 0) nsr.pinned_bytes -= std::min(nsr.pinned_bytes, HostTier::Charge(*len));
      nsr.host_bytes -= std::min(nsr.host_bytes, HostTier::Charge(*len));
      host_->Erase(tk);
    }
  }
  if (ssd_) {
    absl::StatusOr<std::string> got = ssd_->Get(tk);
    if (got.ok()) {
      const absl::Span<const uint8_t> b(reinterpret_cast<const uint8_t*>(got->data()), got->size());
      if (absl::Status s = Verify(b); !s.ok()) {
        checksum_failures_.fetch_add(1);
        (void)ssd_->Delete(tk);
        return absl::DataLossError(absl::StrCat("stored block failed verification: ", s.message()));
      }
      if (b.size() > dst.size()) return absl::OutOfRangeError(absl::StrCat("block is ", b.size(), " bytes, buffer ", dst.size()));
      std::memcpy(dst.data(), b.data(), b.size());
      hits_ssd_.fetch_add(1);
      get_bytes_.fetch_add(b.size());
      if (FitsHost(b.size()) && InsertHost(ns, key, b).ok()) promotions_.fetch_add(1);
      return b.size();
    }
    if (got.status().code() != absl::StatusCode::kNotFound) return got.status();
  }
  misses_.fetch_add(1);
  return absl::NotFoundError("miss");
}

absl::StatusOr<size_t> BlockStore::SizeOf(uint32_t ns, const BlockKey& key) {
  {
    absl::MutexLock l(&mu_);
    if (!namespaces_.count(ns)) return absl::PermissionDeniedError("unknown namespace");
    if (std::optional<uint64_t> n = host_->LengthOf({ns, key})) return *n;
  }
  if (ssd_) {
    absl::StatusOr<std::string> got = ssd_->Get({ns, key});
    if (got.ok()) return got->size();
  }
  return absl::NotFoundError("miss");
}

absl::StatusOr<std::string> BlockStore::Get(uint32_t ns, const BlockKey& key) {
  for (int attempt = 0; attempt < 3; ++attempt) {  // the block may be replaced between sizing and copying
    ASSIGN_OR_RETURN(size_t n, SizeOf(ns, key));
    std::string out(n, '\0');
    absl::StatusOr<size_t> got = Get(ns, key, {reinterpret_cast<uint8_t*>(out.data()), out.size()});
    if (got.ok()) {
      out.resize(*got);
      return out;
    }
    if (got.status().code() != absl::StatusCode::kOutOfRange) return got.status();
  }
  return absl::UnavailableError("block kept changing size");
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
    RETURN_IF_ERROR(InsertHost(ns, key, b));
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

absl::StatusOr<std::vector<float>> BlockStore::GatherRows(uint32_t ns, const BlockKey& key, absl::Span<const int> rows) {
  ASSIGN_OR_RETURN(std::string block, Get(ns, key));
  ASSIGN_OR_RETURN(BlockView view, ParseBlock(AsBytes(block)));
  ASSIGN_OR_RETURN(std::unique_ptr<KvCodec> codec, CodecForBlock(view));
  const BlockHeader& h = view.header;
  const size_t per = size_t(h.layer_count) * h.layout.num_kv_heads * rows.size() * h.layout.head_dim;
  std::vector<float> out(2 * per);
  RETURN_IF_ERROR(codec->DecodeRows(view, rows, out.data(), out.data() + per));
  return out;
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
  s.promotions = promotions_;
  return s;
}

absl::Status BlockStore::Flush() { return ssd_ ? ssd_->Flush() : absl::OkStatus(); }

}  // namespace kvrecall
