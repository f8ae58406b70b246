#include "engine/cache_factory.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codec/codec.h"
#include "codec/commvq.h"
#include "codec/kivi.h"
#include "common/status.h"
#include "engine/codec_cache.h"
#include "engine/retrieval_cache.h"
#include "engine/session_cache.h"

namespace kvrecall {

absl::StatusOr<std::vector<std::string>> ExpandCacheSpec(const std::string& spec, const KvCacheContext& ctx) {
  if (ctx.num_layers < 1) return absl::InvalidArgumentError("cache context has no layers");
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  std::vector<std::string> out;
  if (name == "qwc" && colon != std::string::npos) {
    ASSIGN_OR_RETURN(auto params, ParseParams(spec.substr(colon + 1)));
    auto it = params.find("budget");
    if (it != params.end()) {
      double budget;
      if (!absl::SimpleAtod(it->second, &budget) || budget < 1 || budget > 8) {
        return absl::InvalidArgumentError(absl::StrCat("budget=", it->second, " is not in [1, 8]"));
      }
      if (params.count("kbits") || params.count("vbits")) {
        return absl::InvalidArgumentError("qwc: give either budget or kbits/vbits");
      }
      if (ctx.k_norms.size() != size_t(ctx.num_layers) || ctx.v_norms.size() != size_t(ctx.num_layers)) {
        return absl::FailedPreconditionError("qwc:budget needs the model's W_K and W_V norms");
      }
      params.erase(it);
      std::vector<double> sens;
      for (int l = 0; l < ctx.num_layers; ++l) {
        sens.push_back(ctx.k_norms[l] * ctx.k_norms[l]);
        sens.push_back(ctx.v_norms[l] * ctx.v_norms[l]);
      }
      const std::vector<int> bits = AllocateBits(sens, {1, 2, 3, 4, 6, 8}, budget);
      std::vector<std::string> rest;
      for (const auto& [k, v] : params) rest.push_back(absl::StrCat(k, "=", v));
      for (int l = 0; l < ctx.num_layers; ++l) {
        out.push_back(absl::StrCat("qwc:kbits=", bits[2 * l], ",vbits=", bits[2 * l + 1],
                                   rest.empty() ? "" : ",", absl::StrJoin(rest, ",")));
      }
      return out;
    }
  }
  out.assign(ctx.num_layers, spec);
  return out;
}

bool IsRetrievalCacheSpec(const std::string& spec) {
  const std::string name = spec.substr(0, spec.find(':'));
  return name == "oracle" || name == "a2ats" || name == "quest" || name == "pq";
}

bool NeedsCalibration(const std::string& spec) {
  return IsRetrievalCacheSpec(spec) || spec.substr(0, spec.find(':')) == "session" ||
         (spec.substr(0, spec.find(':')) == "commvq" && spec.find("cal=") == std::string::npos);
}

namespace {

absl::StatusOr<std::unique_ptr<KvCache>> MakeRetrievalCache(const std::string& spec, const KvCacheContext& ctx) {
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  ASSIGN_OR_RETURN(auto params, ParseParams(colon == std::string::npos ? "" : spec.substr(colon + 1)));
  SelectionConfig sel;
  std::vector<std::string> index_params;
  int64_t cal_keys = 0;
  if (ctx.calibration) {
    for (const auto& r : ctx.calibration->records) {
      if (r.layer == 0) cal_keys += r.tokens;
    }
  }
  bool has_centroids = false, has_b = false;
  for (const auto& [k, v] : params) {
    double x;
    if (k == "topk" || k == "sinks" || k == "window") {
      if (!absl::SimpleAtod(v, &x) || x < 0) return absl::InvalidArgumentError(absl::StrCat(k, "=", v, " is not a number >= 0"));
      if (k == "topk") {
        if (x <= 1) sel.topk_fraction = x, sel.topk = 0;  // a fraction (1 = everything)
        else sel.topk = static_cast<int64_t>(x);
      } else if (k == "sinks") {
        sel.sinks = static_cast<int>(x);
      } else {
        sel.window = static_cast<int>(x);
      }
      continue;
    }
    if (k == "centroids") has_centroids = true;
    if (k == "b") has_b = true;
    index_params.push_back(absl::StrCat(k, "=", v));
  }
  if (name == "a2ats" && !has_centroids) {
    // The calibration text decides how big a codebook it can train.
    int c = 16;
    while (c * 2 <= std::min<int64_t>(4096, cal_keys / 39)) c *= 2;  // FAISS wants >= 39 points per centroid
    index_params.push_back(absl::StrCat("centroids=", c));
  }
  if (name == "a2ats" && !has_b && ctx.context_len > 0) {
    // Windowed RoPE's fixed offset b, scaled to the context (the paper's 2048
    // is for 128K-token contexts; stories260K has 512).
    index_params.push_back(absl::StrCat("b=", std::clamp(ctx.context_len / 8, 16, 2048)));
  }
  const std::string index_spec = index_params.empty() ? name : name + ":" + absl::StrJoin(index_params, ",");
  return NewRetrievalKvCache(index_spec, sel, ctx.calibration, spec);
}

}  // namespace

absl::StatusOr<std::string> TrainCommVqSpec(const std::string& spec, const KvTrace& trace) {
  const size_t colon = spec.find(':');
  ASSIGN_OR_RETURN(auto params, ParseParams(colon == std::string::npos ? "" : spec.substr(colon + 1)));
  const KvLayout& l = trace.layout;
  double bits = 2;
  int kdigit = l.head_dim >= 64 ? 6 : 4, vbits = 8, residual = 32, chunk = 32, iters = 12, train = 8192;
  for (const auto& [k, v] : params) {
    double x;
    if (!absl::SimpleAtod(v, &x)) return absl::InvalidArgumentError(absl::StrCat("commvq: ", k, "=", v, " is not a number"));
    if (k == "bits" && x >= 0.25 && x <= 8) bits = x;
    else if (k == "kdigit" && x >= 1 && x <= 8) kdigit = int(x);
    else if (k == "vbits" && x >= 1 && x <= 12) vbits = int(x);
    else if (k == "residual" && x >= 0 && x <= 4096) residual = int(x);
    else if (k == "buffer" && x >= 1 && x <= 4096) chunk = int(x);
    else if (k == "iters" && x >= 1 && x <= 1000) iters = int(x);
    else if (k == "train" && x >= 64 && x <= (1 << 24)) train = int(x);
    else return absl::InvalidArgumentError(absl::StrCat("commvq: unknown or out-of-range parameter ", k, "=", v));
  }
  CommVqConfig cfg = CommVqConfigForBits(bits, l.head_dim, kdigit, vbits);
  cfg.residual = residual, cfg.chunk = chunk, cfg.train.iters = iters, cfg.train.max_train = train;
  CommVqTrainingSet data;
  data.k_pre.resize(l.num_layers), data.v.resize(l.num_layers);
  for (const KvTraceRecord& r : trace.records) {
    if (r.layer >= uint32_t(l.num_layers)) return absl::InvalidArgumentError("calibration trace record outside the layout");
    data.k_pre[r.layer].insert(data.k_pre[r.layer].end(), r.k_pre_rope.begin(), r.k_pre_rope.end());
    data.v[r.layer].insert(data.v[r.layer].end(), r.v.begin(), r.v.end());
  }
  KvLayout layout = l;
  layout.keys_pre_rope = true;
  ASSIGN_OR_RETURN(auto cal, TrainCommVqCalibration(layout, l.num_layers, data, cfg));
  RegisterCommVqCalibration(cal);
  return CommVqCodecSpec(*cal);
}

absl::StatusOr<std::unique_ptr<KvCache>> MakeKvCache(const std::string& spec, const KvCacheContext& ctx) {
  if (spec == "exact") return NewExactKvCache();
  if (spec.substr(0, spec.find(':')) == "session") return NewSessionKvCache(spec, ctx.calibration, ctx.context_len);
  if (IsRetrievalCacheSpec(spec)) return MakeRetrievalCache(spec, ctx);
  if (spec.rfind("exact:", 0) == 0) return absl::InvalidArgumentError("cache 'exact' takes no parameters");
  std::string resolved = spec;
  if (NeedsCalibration(spec)) {
    if (ctx.calibration == nullptr) return absl::FailedPreconditionError("commvq trains its codebooks on a calibration trace");
    ASSIGN_OR_RETURN(resolved, TrainCommVqSpec(spec, *ctx.calibration));
  }
  ASSIGN_OR_RETURN(std::vector<std::string> specs, ExpandCacheSpec(resolved, ctx));
  std::vector<std::unique_ptr<KvCodec>> codecs;
  for (const std::string& s : specs) {
    absl::StatusOr<std::unique_ptr<KvCodec>> c = MakeCodec(s);
    if (!c.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown KV cache '", spec, "': ", c.status().message(),
                                                     " (or 'exact')"));
    }
    codecs.push_back(std::move(*c));
  }
  return NewCodecKvCache(std::move(codecs), spec, ctx.model_id);
}

}  // namespace kvrecall
