#include "engine/session_cache.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/kv_client.h"
#include "client/retrieval_session.h"
#include "codec/codec.h"
#include "common/status.h"
#include "engine/calibration.h"

namespace kvrecall {
namespace {

class SessionKvCache final : public KvCache {
 public:
  SessionKvCache(std::string name, std::unique_ptr<KvClient> client, RetrievalSessionOptions o, const KvTrace* cal)
      : name_(std::move(name)), client_(std::move(client)), o_(std::move(o)), cal_(cal) {}
  std::string name() const override { return name_; }

  absl::Status Begin(const KvLayout& layout) override {
    o_.layout = layout;
    o_.sequence_id = absl::StrCat("engine-seq-", ++sequences_);
    if (!calibration_ || !(calibration_layout_ == layout)) {
      if (cal_ == nullptr) return absl::FailedPreconditionError("session cache needs a calibration trace");
      calibration_ = std::make_unique<CalibrationSet>(*cal_, layout);
      calibration_layout_ = layout;
    }
    ASSIGN_OR_RETURN(session_, RetrievalSession::Open(client_.get(), o_, calibration_->samples()));
    return absl::OkStatus();
  }

  absl::Status Append(int layer, const KvTokenView& t) override {
    if (!session_) return absl::FailedPreconditionError("Append before Begin");
    return session_->Append(layer, t.k_pre_rope, t.k, t.v, 1);
  }

  absl::Status Attend(int layer, int, const float* q, const float* q_pre_rope, float* out) override {
    if (!session_) return absl::FailedPreconditionError("Attend before Begin");
    return session_->Step(layer, q_pre_rope, q, out);
  }

  double BytesPerToken() const override {
    if (!session_) return 0;
    const RetrievalSessionStats s = session_->stats();
    const int64_t total = std::max<int64_t>(1, session_->size(0));
    // Offloaded blocks (codec bytes) and the f32 local part, over all layers.
    const double local = double(total * o_.layout.num_layers - s.offloaded_tokens) * 2 * o_.layout.num_kv_heads *
                         o_.layout.head_dim * 4;
    return (double(s.saved_bytes) + local) / double(total);
  }

 private:
  std::string name_;
  std::unique_ptr<KvClient> client_;
  RetrievalSessionOptions o_;
  const KvTrace* cal_;
  std::unique_ptr<CalibrationSet> calibration_;
  KvLayout calibration_layout_;
  std::unique_ptr<RetrievalSession> session_;
  int sequences_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvCache>> NewSessionKvCache(const std::string& spec, const KvTrace* calibration,
                                                           int context_len) {
  const size_t colon = spec.find(':');
  ASSIGN_OR_RETURN(auto params, ParseParams(colon == std::string::npos ? "" : spec.substr(colon + 1)));
  RetrievalSessionOptions o;
  o.block_tokens = 16;
  o.topk_fraction = 0.1;
  KvClient::Options co;
  int centroids = 0;
  double b = std::clamp(context_len / 8, 16, 2048);
  for (const auto& [k, v] : params) {
    double x = 0;
    const bool num = absl::SimpleAtod(v, &x);
    if (k == "fetch" && (v == "attend" || v == "gather")) {
      o.fetch = v == "attend" ? RetrievalSessionOptions::Fetch::kAttend : RetrievalSessionOptions::Fetch::kGather;
    } else if (k == "topk" && num && x > 0) {
      if (x <= 1) o.topk_fraction = x, o.topk = 0;
      else o.topk = static_cast<int64_t>(x);
    } else if (k == "block" && num && x >= 1 && x <= 4096) {
      o.block_tokens = static_cast<int>(x);
    } else if (k == "window" && num && x >= 0) {
      o.window = static_cast<int>(x);
    } else if (k == "sinks" && num && x >= 0) {
      o.sinks = static_cast<int>(x);
    } else if (k == "centroids" && num && x >= 2) {
      centroids = static_cast<int>(x);
    } else if (k == "b" && num && x > 0) {
      b = x;
    } else if (k == "prefetch" && (v == "0" || v == "1")) {
      o.prefetch = v == "1";  // gather mode: fetch the next layer's last rows ahead
    } else if (k == "recall" && num && x >= 0) {
      o.recall_every = static_cast<int>(x);  // live recall on every x-th step (0: never)
    } else if (k == "nodes") {
      for (absl::string_view n : absl::StrSplit(v, ';', absl::SkipEmpty())) co.nodes.push_back({std::string(n), 1.0});
    } else if (k == "token") {
      co.namespace_token = v;
    } else if (k == "salt") {
      co.namespace_salt = v;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("session: bad parameter ", k, "=", v));
    }
  }
  if (centroids == 0) {  // what the calibration text can train (FAISS wants >= 39 points per centroid)
    int64_t keys = 0;
    if (calibration) {
      for (const auto& r : calibration->records) keys += r.layer == 0 ? r.tokens : 0;
    }
    centroids = 16;
    while (centroids * 2 <= std::min<int64_t>(4096, keys / 39)) centroids *= 2;
  }
  o.index = absl::StrCat("a2ats:b=", b, ",centroids=", centroids, ",iters=10,seed=1");
  ASSIGN_OR_RETURN(std::unique_ptr<KvClient> client, KvClient::Create(co));
  return std::unique_ptr<KvCache>(new SessionKvCache(spec, std::move(client), o, calibration));
}

}  // namespace kvrecall
