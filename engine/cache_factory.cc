#include "engine/cache_factory.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codec/codec.h"
#include "codec/kivi.h"
#include "common/status.h"
#include "engine/codec_cache.h"

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

absl::StatusOr<std::unique_ptr<KvCache>> MakeKvCache(const std::string& spec, const KvCacheContext& ctx) {
  if (spec == "exact") return NewExactKvCache();
  if (spec.rfind("exact:", 0) == 0) return absl::InvalidArgumentError("cache 'exact' takes no parameters");
  ASSIGN_OR_RETURN(std::vector<std::string> specs, ExpandCacheSpec(spec, ctx));
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
