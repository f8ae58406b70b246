#include "store/admin_service.h"

#include <mutex>

#include "codec/bytes.h"
#include "common/env.h"
#include "proto/grpc_status.h"

namespace kvrecall {
namespace {

std::string Metadata(grpc::ServerContext* ctx, const char* key) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(key);
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

void FillHistogram(const LatencyHistogram::Snapshot& s, v1::Histogram* h) {
  for (int b = 0; b < LatencyHistogram::kBuckets; ++b) {
    h->add_upper_bounds_us(b + 1 >= LatencyHistogram::kBuckets ? 1e300 : LatencyHistogram::UpperBoundUs(b));
    h->add_counts(s.counts[b]);
  }
  h->set_count(s.count);
  h->set_sum_us(s.sum_us);
}

}  // namespace

AdminService::AdminService(BlockStore* store, StoreService* service, std::string admin_token, std::string data_address,
                           std::function<void()> drain)
    : store_(store), service_(service), admin_token_(std::move(admin_token)), data_address_(std::move(data_address)),
      drain_(std::move(drain)), start_us_(Env::Default()->NowMicros()) {}

grpc::Status AdminService::Health(grpc::ServerContext*, const v1::HealthRequest*, v1::HealthResponse* r) {
  r->set_state(service_->draining() ? v1::HealthResponse::DRAINING : v1::HealthResponse::SERVING);
  r->set_version("kvrecall 0.1 (protocol v1)");
  r->set_data_address(data_address_);
  r->set_uptime_seconds(static_cast<uint64_t>((Env::Default()->NowMicros() - start_us_) / 1000000));
  return grpc::Status::OK;
}

grpc::Status AdminService::Stats(grpc::ServerContext*, const v1::StatsRequest*, v1::StatsResponse* r) {
  const StoreStats s = store_->Stats();
  auto tier = [](v1::TierStats* t, uint64_t cap, uint64_t used, uint64_t blocks, uint64_t ev, uint64_t evb) {
    t->set_capacity_bytes(cap), t->set_used_bytes(used), t->set_blocks(blocks), t->set_evictions(ev),
        t->set_evicted_bytes(evb);
  };
  tier(r->mutable_host(), s.host.capacity, s.host.used_bytes, s.host.blocks, s.host.evictions, s.host.evicted_bytes);
  if (s.has_ssd) tier(r->mutable_ssd(), s.ssd.budget, s.ssd.bytes, s.ssd.blocks, s.ssd.evictions, s.ssd.evicted_bytes);
  r->set_puts(s.puts), r->set_put_bytes(s.put_bytes), r->set_gets(s.gets), r->set_get_bytes(s.get_bytes);
  r->set_hits_host(s.hits_host), r->set_hits_ssd(s.hits_ssd), r->set_misses(s.misses);
  r->set_checksum_failures(s.checksum_failures), r->set_rejected_requests(s.rejected);
  r->set_demotions(s.demotions), r->set_promotions(s.promotions);
  const ServiceStats v = service_->Stats();
  FillHistogram(v.put, &(*r->mutable_latency())["put"]);
  FillHistogram(v.get, &(*r->mutable_latency())["get"]);
  FillHistogram(v.exists, &(*r->mutable_latency())["exists"]);
  FillHistogram(v.del, &(*r->mutable_latency())["delete"]);
  FillHistogram(v.gather, &(*r->mutable_latency())["gather"]);
  FillHistogram(v.attend, &(*r->mutable_latency())["attend"]);
  v1::RetrievalStats* rs = r->mutable_retrieval();
  const RecallStats& rc = v.recall;
  rs->set_samples(rc.samples);
  if (rc.samples > 0) {
    rs->set_topk_recall_mean(rc.topk_recall_sum / rc.samples);
    rs->set_mass_recall_mean(rc.mass_recall_sum / rc.samples);
    rs->set_output_error_mean(rc.output_error_sum / rc.samples);
  }
  for (size_t b = 0; b < RecallStats::kMassBounds.size(); ++b) {
    rs->add_mass_recall_upper_bounds(RecallStats::kMassBounds[b]);
    rs->add_mass_recall_counts(rc.mass_counts[b]);
  }
  for (const NamespaceStats& n : s.namespaces) {
    v1::NamespaceStats* o = r->add_namespaces();
    o->set_name(n.name), o->set_quota_bytes(n.quota_bytes), o->set_host_bytes(n.host_bytes),
        o->set_pinned_bytes(n.pinned_bytes);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::CreateNamespace(grpc::ServerContext* ctx, const v1::CreateNamespaceRequest* req,
                                           v1::CreateNamespaceResponse*) {
  NamespaceConfig c{req->name(), req->token(), req->quota_bytes(), req->salt()};
  return ToGrpcStatus(store_->CreateNamespace(Metadata(ctx, "kvrecall-admin-token"), c));
}

grpc::Status AdminService::SetQuota(grpc::ServerContext* ctx, const v1::SetQuotaRequest* req, v1::SetQuotaResponse*) {
  return ToGrpcStatus(store_->SetQuota(Metadata(ctx, "kvrecall-admin-token"), req->name(), req->quota_bytes()));
}

grpc::Status AdminService::PinOrUnpin(grpc::ServerContext* ctx, const v1::PinRequest* req, v1::PinResponse* resp,
                                      bool pin) {
  absl::StatusOr<uint32_t> ns = store_->Authenticate(Metadata(ctx, "kvrecall-token"));
  if (!ns.ok()) return ToGrpcStatus(ns.status());
  if (req->keys_size() > 65536) return ToGrpcStatus(absl::InvalidArgumentError("at most 65536 keys per call"));
  for (const std::string& k : req->keys()) {
    if (k.size() != 16) return ToGrpcStatus(absl::InvalidArgumentError("keys are 16 bytes"));
  }
  for (const std::string& k : req->keys()) {
    const auto* p = reinterpret_cast<const uint8_t*>(k.data());
    const BlockKey key{LoadLE<uint64_t>(p), LoadLE<uint64_t>(p + 8)};
    const absl::Status s = pin ? store_->Pin(*ns, key) : store_->Unpin(*ns, key);
    resp->add_codes(static_cast<int>(s.code()));
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::Pin(grpc::ServerContext* ctx, const v1::PinRequest* req, v1::PinResponse* resp) {
  return PinOrUnpin(ctx, req, resp, true);
}

grpc::Status AdminService::Unpin(grpc::ServerContext* ctx, const v1::PinRequest* req, v1::PinResponse* resp) {
  return PinOrUnpin(ctx, req, resp, false);
}

grpc::Status AdminService::Drain(grpc::ServerContext* ctx, const v1::DrainRequest*, v1::DrainResponse*) {
  const std::string token = Metadata(ctx, "kvrecall-admin-token");
  if (token.empty()) return ToGrpcStatus(absl::UnauthenticatedError("admin token missing"));
  if (admin_token_.empty() || token != admin_token_) return ToGrpcStatus(absl::PermissionDeniedError("wrong admin token"));
  std::call_once(drain_once_, drain_);
  return grpc::Status::OK;
}

}  // namespace kvrecall
