#include "codec/kv_layout.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec/bytes.h"
#include "codec/half.h"

namespace kvrecall {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
  }
  return 0;
}

absl::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
  }
  return "unknown";
}

absl::string_view RopeStyleName(RopeStyle s) {
  switch (s) {
    case RopeStyle::kNone: return "none";
    case RopeStyle::kHalfSplit: return "half_split";
    case RopeStyle::kInterleaved: return "interleaved";
  }
  return "unknown";
}

absl::Status KvLayout::Validate() const {
  auto dim_ok = [](int v) { return v >= 1 && v <= 65535; };
  if (!dim_ok(num_layers)) return absl::InvalidArgumentError(absl::StrCat("num_layers ", num_layers, " not in [1, 65535]"));
  if (!dim_ok(num_q_heads)) return absl::InvalidArgumentError(absl::StrCat("num_q_heads ", num_q_heads, " not in [1, 65535]"));
  if (!dim_ok(num_kv_heads)) return absl::InvalidArgumentError(absl::StrCat("num_kv_heads ", num_kv_heads, " not in [1, 65535]"));
  if (!dim_ok(head_dim)) return absl::InvalidArgumentError(absl::StrCat("head_dim ", head_dim, " not in [1, 65535]"));
  if (num_q_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_q_heads ", num_q_heads,
                                                   " is not a multiple of num_kv_heads ", num_kv_heads));
  }
  if (DTypeSize(dtype) == 0) return absl::InvalidArgumentError("unknown dtype");
  if (rope_style != RopeStyle::kNone && rope_style != RopeStyle::kHalfSplit &&
      rope_style != RopeStyle::kInterleaved) {
    return absl::InvalidArgumentError("unknown rope_style");
  }
  if (rope_style != RopeStyle::kNone && head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", head_dim, " must be even for RoPE"));
  }
  if (!(std::isfinite(rope_theta) && rope_theta > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("rope_theta ", rope_theta, " must be finite and > 0"));
  }
  if (!(std::isfinite(rope_scaling) && rope_scaling > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("rope_scaling ", rope_scaling, " must be finite and > 0"));
  }
  return absl::OkStatus();
}

std::string KvLayout::DebugString() const {
  return absl::StrFormat(
      "layers=%d q_heads=%d kv_heads=%d head_dim=%d dtype=%s rope=%s theta=%g scaling=%g keys=%s",
      num_layers, num_q_heads, num_kv_heads, head_dim, DTypeName(dtype), RopeStyleName(rope_style),
      rope_theta, rope_scaling, keys_pre_rope ? "pre_rope" : "post_rope");
}

bool operator==(const KvLayout& a, const KvLayout& b) {
  return a.num_layers == b.num_layers && a.num_q_heads == b.num_q_heads &&
         a.num_kv_heads == b.num_kv_heads && a.head_dim == b.head_dim && a.dtype == b.dtype &&
         a.rope_style == b.rope_style && FloatBits(a.rope_theta) == FloatBits(b.rope_theta) &&
         FloatBits(a.rope_scaling) == FloatBits(b.rope_scaling) &&
         a.keys_pre_rope == b.keys_pre_rope;
}

void EncodeLayout(const KvLayout& l, uint8_t* out) {
  StoreLE<uint16_t>(out + 0, static_cast<uint16_t>(l.num_layers));
  StoreLE<uint16_t>(out + 2, static_cast<uint16_t>(l.num_q_heads));
  StoreLE<uint16_t>(out + 4, static_cast<uint16_t>(l.num_kv_heads));
  StoreLE<uint16_t>(out + 6, static_cast<uint16_t>(l.head_dim));
  out[8] = static_cast<uint8_t>(l.dtype);
  out[9] = static_cast<uint8_t>(l.rope_style);
  out[10] = l.keys_pre_rope ? 1 : 0;
  out[11] = 0;
  StoreLE<float>(out + 12, l.rope_theta);
  StoreLE<float>(out + 16, l.rope_scaling);
  StoreLE<uint32_t>(out + 20, 0);
}

absl::StatusOr<KvLayout> DecodeLayout(const uint8_t* in) {
  if (in[10] > 1 || in[11] != 0 || LoadLE<uint32_t>(in + 20) != 0) {
    return absl::DataLossError("layout: reserved bytes are not zero");
  }
  if (in[8] > static_cast<uint8_t>(DType::kBF16)) {
    return absl::DataLossError(absl::StrCat("layout: unknown dtype ", in[8]));
  }
  if (in[9] > static_cast<uint8_t>(RopeStyle::kInterleaved)) {
    return absl::DataLossError(absl::StrCat("layout: unknown rope style ", in[9]));
  }
  KvLayout l;
  l.num_layers = LoadLE<uint16_t>(in + 0);
  l.num_q_heads = LoadLE<uint16_t>(in + 2);
  l.num_kv_heads = LoadLE<uint16_t>(in + 4);
  l.head_dim = LoadLE<uint16_t>(in + 6);
  l.dtype = static_cast<DType>(in[8]);
  l.rope_style = static_cast<RopeStyle>(in[9]);
  l.keys_pre_rope = in[10] != 0;
  l.rope_theta = LoadLE<float>(in + 12);
  l.rope_scaling = LoadLE<float>(in + 16);
  if (absl::Status s = l.Validate(); !s.ok()) {
    return absl::DataLossError(absl::StrCat("layout: ", s.message()));
  }
  return l;
}

Hash128 ModelFingerprint(absl::string_view model_id, const KvLayout& layout, uint16_t codec_id,
                         absl::string_view codec_params, uint32_t codebook_version) {
  std::string buf = "kvrecall.fingerprint.v1";
  AppendLE<uint32_t>(&buf, static_cast<uint32_t>(model_id.size()));
  buf.append(model_id.data(), model_id.size());
  uint8_t l[kEncodedLayoutBytes];
  EncodeLayout(layout, l);
  buf.append(reinterpret_cast<const char*>(l), sizeof(l));
  AppendLE<uint16_t>(&buf, codec_id);
  AppendLE<uint32_t>(&buf, static_cast<uint32_t>(codec_params.size()));
  buf.append(codec_params.data(), codec_params.size());
  AppendLE<uint32_t>(&buf, codebook_version);
  return Hash128Of(buf);
}

}  // namespace kvrecall
