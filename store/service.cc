#include "store/service.h"

#include <cmath>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "common/hash.h"

namespace kvrecall {

class StoreExchange final : public Exchange {
 public:
  StoreExchange(StoreService* svc, int64_t start_us) : svc_(svc), start_us_(start_us) {}

  // Parses and authenticates; prepares the payload destination for puts.
  void Start(absl::Span<const uint8_t> head, uint64_t payload_len) {
    if (svc_->draining()) return Fail(head, absl::UnavailableError("server is draining"));
    absl::StatusOr<Request> r = ParseRequest(head);
    if (!r.ok()) return Fail(head, r.status());
    req_ = std::move(*r);
    if (req_.header.payload_len != payload_len) {
      return Fail(head, absl::InvalidArgumentError(absl::StrCat("header announces ", req_.header.payload_len,
                                                                " payload bytes, ", payload_len, " arrived")));
    }
    absl::StatusOr<uint32_t> ns = svc_->store_->Authenticate(req_.token);
    if (!ns.ok()) return Fail(head, ns.status());
    ns_ = *ns;
    if (req_.op() == Op::kAttend) {  // the queries arrive as the payload
      queries_.resize(req_.header.payload_len / sizeof(float));
      dest_.push_back({reinterpret_cast<uint8_t*>(queries_.data()), queries_.size() * sizeof(float)});
      return;
    }
    if (req_.op() != Op::kPut) return;
    const bool durable = req_.header.flags & kFlagDurable;
    codes_.assign(req_.puts.size(), absl::StatusCode::kOk);
    for (size_t i = 0; i < req_.puts.size(); ++i) {
      const PutItem& p = req_.puts[i];
      absl::StatusOr<PendingPut> pp = p.length > 0 ? svc_->store_->BeginPut(ns_, p.key, p.length, durable)
                                                   : absl::InvalidArgumentError("empty block");
      if (pp.ok()) {
        dest_.push_back(pp->data());
        pending_.push_back(std::move(*pp));
        continue;
      }
      codes_[i] = pp.status().code();
      pending_.emplace_back();
      // Refused item: its bytes land in a reused discard buffer.
      if (discard_.empty()) discard_.resize(64 << 10);
      for (uint64_t left = p.length; left > 0;) {
        const uint64_t n = std::min<uint64_t>(left, discard_.size());
        dest_.push_back({discard_.data(), n});
        left -= n;
      }
    }
  }

  MutableIov PayloadDestination() override { return failed_ ? MutableIov{} : dest_; }

  void Finish(const absl::Status& payload_status) override {
    if (failed_) return;
    Reply rep;
    rep.header.op = static_cast<uint16_t>(req_.header.op | kReplyBit);
    rep.header.request_id = req_.header.request_id;
    BlockStore* store = svc_->store_;
    switch (req_.op()) {
      case Op::kPut:
        for (size_t i = 0; i < req_.puts.size(); ++i) {
          absl::StatusCode code = codes_[i];
          if (code == absl::StatusCode::kOk) {
            code = payload_status.ok() ? store->CommitPut(std::move(pending_[i])).code() : absl::StatusCode::kUnavailable;
          }
          rep.items.push_back({static_cast<uint8_t>(code), 0, 0});
        }
        pending_.clear();
        break;
      case Op::kGet: {
        uint64_t off = 0;
        for (const BlockKey& k : req_.keys) {
          absl::StatusOr<BlockLease> lease = store->Lease(ns_, k);
          if (lease.ok() && off + lease->bytes().size() > StoreService::kMaxReplyPayload) {
            lease = absl::ResourceExhaustedError("reply payload limit");
          }
          if (!lease.ok()) {
            rep.items.push_back({static_cast<uint8_t>(lease.status().code()), 0, 0});
            continue;
          }
          const uint32_t len = static_cast<uint32_t>(lease->bytes().size());
          rep.items.push_back({0, off, len});
          off += len;
          payload_.push_back(lease->bytes());
          leases_.push_back(std::move(*lease));
        }
        rep.header.payload_len = off;
        break;
      }
      case Op::kExists: {
        const ExistsResult e = store->Exists(ns_, req_.keys);
        rep.prefix = e.prefix;
        rep.present = e.present;
        break;
      }
      case Op::kDelete:
        for (const BlockKey& k : req_.keys) {
          absl::StatusOr<bool> d = store->Delete(ns_, k);
          const absl::StatusCode code =
              !d.ok() ? d.status().code() : (*d ? absl::StatusCode::kOk : absl::StatusCode::kNotFound);
          rep.items.push_back({static_cast<uint8_t>(code), 0, 0});
        }
        break;
      case Op::kAttend:
        break;  // FinishAttend
      case Op::kRecall:
        svc_->RecordRecall(req_.recall);
        rep.items.push_back({0, 0, 0});
        break;
      case Op::kGather: {
        uint64_t off = 0;
        const bool compressed = req_.header.flags & kFlagGatherCompressed;
        std::vector<absl::StatusOr<std::vector<float>>> decoded;  // all blocks' rows, read in one pass
        if (!compressed) {
          std::vector<BlockStore::AttendItem> items;
          items.reserve(req_.gathers.size());
          for (const GatherItem& g : req_.gathers) items.push_back({g.key, std::vector<int>(g.rows.begin(), g.rows.end())});
          decoded = store->GatherRows(ns_, items, StoreService::kMaxReplyPayload);  // the reply is checked below too
        }
        for (size_t gi = 0; gi < req_.gathers.size(); ++gi) {
          const GatherItem& g = req_.gathers[gi];
          absl::Span<const uint8_t> bytes;
          absl::Status st;
          if (compressed) {
            absl::StatusOr<BlockLease> lease = store->Lease(ns_, g.key);
            st = lease.status();
            if (st.ok()) {
              bytes = lease->bytes();
              leases_.push_back(std::move(*lease));
            }
          } else {
            absl::StatusOr<std::vector<float>>& f = decoded[gi];
            st = f.status();
            if (st.ok()) {
              // Decoded rows carry their own XXH3-64 so the client can verify them too.
              std::string rows_bytes(reinterpret_cast<const char*>(f->data()), f->size() * sizeof(float));
              AppendLE<uint64_t>(&rows_bytes, Checksum64(rows_bytes.data(), rows_bytes.size()));
              owned_.push_back(std::move(rows_bytes));
              f = absl::StatusOr<std::vector<float>>();  // copied: free it before the next block's copy
              bytes = {reinterpret_cast<const uint8_t*>(owned_.back().data()), owned_.back().size()};
            }
          }
          if (st.ok() && off + bytes.size() > StoreService::kMaxReplyPayload) {
            st = absl::ResourceExhaustedError("reply payload limit");
          }
          if (!st.ok()) {
            rep.items.push_back({static_cast<uint8_t>(st.code()), 0, 0});
            continue;
          }
          rep.items.push_back({0, off, static_cast<uint32_t>(bytes.size())});
          off += bytes.size();
          payload_.push_back(bytes);
        }
        rep.header.payload_len = off;
        break;
      }
    }
    if (req_.op() == Op::kAttend) FinishAttend(payload_status, &rep);
    head_ = EncodeReply(rep);
    if (LatencyHistogram* h = svc_->HistogramFor(req_.op())) h->Record(double(svc_->env_->NowMicros() - start_us_));
  }

  // Off the progress thread: attention and row gathers (they read and decode
  // many blocks), and puts and gets that wait on the SSD tier (a RocksDB read,
  // a write-through, a durable put's fsync), which would stall every other
  // requester behind them. Puts and gets served from RAM stay on the progress
  // thread, hashing included: handing 1 MiB blocks to a worker measured
  // slower on 2 cores (two more thread switches per call, and no idle core
  // to gain), bench/results/store_bench_analysis.md.
  bool Heavy() const override {
    if (failed_) return false;
    switch (req_.op()) {
      case Op::kAttend:
      case Op::kGather:
        return true;
      case Op::kPut:
        return svc_->store_->PutWritesSsd(req_.header.flags & kFlagDurable);
      case Op::kGet:
        return svc_->store_->ReadsSsd(ns_, req_.keys);
      default:
        return false;
    }
  }

  absl::string_view reply_head() const override { return head_; }
  ConstIov reply_payload() const override { return payload_; }

 private:
  // One item: out then lse (f32), then the XXH3-64 of those bytes.
  void FinishAttend(const absl::Status& payload_status, Reply* rep) {
    absl::Status st = payload_status;
    std::vector<float> out, lse;
    if (st.ok()) {
      bool finite = true;
      for (float x : queries_) finite = finite && std::isfinite(x);
      if (!finite) st = absl::InvalidArgumentError("attend: queries are not finite");
    }
    if (st.ok()) {
      std::vector<BlockStore::AttendItem> items;
      for (const GatherItem& g : req_.gathers) items.push_back({g.key, std::vector<int>(g.rows.begin(), g.rows.end())});
      st = svc_->store_->Attend(ns_, items, static_cast<int>(req_.attend_group), req_.attend_scale, queries_, &out,
                                &lse);
    }
    if (!st.ok()) {
      rep->items.push_back({static_cast<uint8_t>(st.code()), 0, 0});
      return;
    }
    std::string bytes(reinterpret_cast<const char*>(out.data()), out.size() * sizeof(float));
    bytes.append(reinterpret_cast<const char*>(lse.data()), lse.size() * sizeof(float));
    AppendLE<uint64_t>(&bytes, Checksum64(bytes.data(), bytes.size()));
    owned_.push_back(std::move(bytes));
    rep->items.push_back({0, 0, static_cast<uint32_t>(owned_.back().size())});
    rep->header.payload_len = owned_.back().size();
    payload_.push_back({reinterpret_cast<const uint8_t*>(owned_.back().data()), owned_.back().size()});
  }

  void Fail(absl::Span<const uint8_t> head, const absl::Status& s) {
    failed_ = true;
    svc_->store_->CountRejected();
    uint64_t id = 0;
    uint16_t op = 0;
    if (head.size() >= 16) {
      std::memcpy(&id, head.data() + 8, 8);  // best effort, so the client can match the error
      std::memcpy(&op, head.data() + 6, 2);
    }
    op &= static_cast<uint16_t>(~kReplyBit);
    if (op < uint16_t(Op::kPut) || op > kLastOp) op = 0;
    head_ = EncodeReply(ErrorReply(id, op, s));
  }

  StoreService* svc_;
  int64_t start_us_;
  Request req_;
  uint32_t ns_ = 0;
  bool failed_ = false;
  std::vector<absl::StatusCode> codes_;
  std::vector<PendingPut> pending_;
  std::vector<float> queries_;  // Attend
  MutableIov dest_;
  std::vector<uint8_t> discard_;
  std::vector<BlockLease> leases_;
  std::deque<std::string> owned_;  // stable addresses
  ConstIov payload_;
  std::string head_;
};

std::unique_ptr<Exchange> StoreService::Begin(absl::Span<const uint8_t> head, uint64_t payload_len) {
  auto ex = std::make_unique<StoreExchange>(this, env_->NowMicros());
  ex->Start(head, payload_len);
  return ex;
}

LatencyHistogram* StoreService::HistogramFor(Op op) {
  switch (op) {
    case Op::kPut: return &put_;
    case Op::kGet: return &get_;
    case Op::kExists: return &exists_;
    case Op::kDelete: return &del_;
    case Op::kGather: return &gather_;
    case Op::kAttend: return &attend_;
    case Op::kRecall: return &recall_latency_;
  }
  return nullptr;
}

void StoreService::RecordRecall(const std::vector<RecallSample>& samples) {
  std::lock_guard<std::mutex> l(recall_mu_);
  for (const RecallSample& x : samples) {
    ++recall_.samples;
    recall_.topk_recall_sum += x.topk_recall;
    recall_.mass_recall_sum += x.mass_recall;
    recall_.output_error_sum += x.output_error;
    size_t b = 0;
    while (b + 1 < RecallStats::kMassBounds.size() && x.mass_recall > RecallStats::kMassBounds[b]) ++b;
    ++recall_.mass_counts[b];
  }
}

ServiceStats StoreService::Stats() const {
  ServiceStats s{put_.Read(), get_.Read(), exists_.Read(), del_.Read(), gather_.Read(), attend_.Read(), {}};
  std::lock_guard<std::mutex> l(recall_mu_);
  s.recall = recall_;
  return s;
}

}  // namespace kvrecall
