#include "codec/codec.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "codec/attention.h"
#include "codec/bytes.h"
#include "codec/codec_internal.h"
#include "codec/half.h"
#include "common/status.h"

namespace kvrecall {

using codec_internal::ParamReader;

absl::StatusOr<std::map<std::string, std::string>> ParseParams(absl::string_view text) {
  std::map<std::string, std::string> out;
  for (absl::string_view kv : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const size_t eq = kv.find('=');
    if (eq == absl::string_view::npos || eq == 0 || eq + 1 == kv.size()) {
      return absl::InvalidArgumentError(absl::StrCat("parameter '", kv, "' is not key=value"));
    }
    if (!out.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1))).second) {
      return absl::InvalidArgumentError(absl::StrCat("parameter '", kv.substr(0, eq), "' given twice"));
    }
  }
  return out;
}

namespace codec_internal {

int ParamReader::Int(const std::string& key, int def, int lo, int hi) {
  used_.insert(key);
  auto it = params_.find(key);
  if (it == params_.end()) return def;
  int v;
  if (!absl::SimpleAtoi(it->second, &v) || v < lo || v > hi) {
    if (error_.ok()) error_ = absl::InvalidArgumentError(absl::StrCat(key, "=", it->second, " is not an integer in [", lo, ", ", hi, "]"));
    return def;
  }
  return v;
}

double ParamReader::Double(const std::string& key, double def, double lo, double hi) {
  used_.insert(key);
  auto it = params_.find(key);
  if (it == params_.end()) return def;
  double v;
  if (!absl::SimpleAtod(it->second, &v) || !(v >= lo && v <= hi)) {
    if (error_.ok()) error_ = absl::InvalidArgumentError(absl::StrCat(key, "=", it->second, " is not a number in [", lo, ", ", hi, "]"));
    return def;
  }
  return v;
}

bool ParamReader::Bool(const std::string& key, bool def) { return Int(key, def ? 1 : 0, 0, 1) != 0; }

std::string ParamReader::String(const std::string& key, const std::string& def) {
  used_.insert(key);
  auto it = params_.find(key);
  return it == params_.end() ? def : it->second;
}

std::string ParamReader::Choice(const std::string& key, const std::string& def,
                                const std::set<std::string>& options) {
  used_.insert(key);
  auto it = params_.find(key);
  if (it == params_.end()) return def;
  if (!options.count(it->second)) {
    if (error_.ok()) error_ = absl::InvalidArgumentError(absl::StrCat(key, "=", it->second, " is not one of: ",
                                                                      absl::StrJoin(options, ", ")));
    return def;
  }
  return it->second;
}

absl::Status ParamReader::Finish() {
  if (!error_.ok()) return error_;
  for (const auto& [k, v] : params_) {
    if (!used_.count(k)) return absl::InvalidArgumentError(absl::StrCat("unknown parameter '", k, "'"));
  }
  return absl::OkStatus();
}

}  // namespace codec_internal

absl::Status ValidateChunk(const KvChunkRef& c) {
  RETURN_IF_ERROR(c.layout.Validate());
  if (c.layer_count < 1 || c.layer_begin < 0 || c.layer_begin + c.layer_count > c.layout.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer range [", c.layer_begin, ", ", c.layer_begin + c.layer_count,
                                                   ") outside ", c.layout.num_layers, " layers"));
  }
  if (c.tokens < 1) return absl::InvalidArgumentError(absl::StrCat("chunk has ", c.tokens, " tokens"));
  if (c.k == nullptr || c.v == nullptr) return absl::InvalidArgumentError("chunk has no K or V data");
  const int64_t n = int64_t(c.layer_count) * c.layout.num_kv_heads * c.tokens * c.layout.head_dim;
  for (const float* x : {c.k, c.v}) {
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(x[i]) || std::fabs(x[i]) > 65504.0f) {
        return absl::InvalidArgumentError(absl::StrCat(x == c.k ? "K" : "V", "[", i, "] = ", x[i],
                                                       " is not finite or beyond f16 range"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> KvCodec::Encode(const KvChunkRef& chunk, EncodeOptions* options) const {
  RETURN_IF_ERROR(ValidateChunk(chunk));
  EncodeOptions local;
  if (options == nullptr) options = &local;
  std::vector<std::string> sections;
  RETURN_IF_ERROR(EncodeSections(chunk, options, &sections));
  const std::string p = params();
  std::vector<absl::Span<const uint8_t>> spans = {AsBytes(p)};
  for (const std::string& s : sections) spans.push_back(AsBytes(s));
  BlockHeader h;
  h.codec_id = static_cast<uint16_t>(id());
  h.layout = chunk.layout;
  h.layer_begin = chunk.layer_begin;
  h.layer_count = chunk.layer_count;
  h.first_token = chunk.first_token;
  h.token_count = chunk.tokens;
  h.fingerprint = options->fingerprint;
  h.chunk_shift = options->chunk_shift;
  return BuildBlock(h, spans);
}

absl::StatusOr<std::vector<absl::Span<const uint8_t>>> KvCodec::CheckBlock(const BlockView& block,
                                                                           Shape* shape) const {
  if (block.header.codec_id != static_cast<uint16_t>(id())) {
    return absl::FailedPreconditionError(absl::StrCat("block has codec id ", block.header.codec_id, ", this is ",
                                                      name(), " (", static_cast<int>(id()), ")"));
  }
  if (block.sections.empty()) return absl::DataLossError("block has no parameter section");
  const std::string p(block.sections[0].begin(), block.sections[0].end());
  if (p != params()) {
    return absl::FailedPreconditionError(absl::StrCat("block parameters '", p, "' differ from this codec's '",
                                                      params(), "'"));
  }
  shape->heads = int(block.header.layer_count) * block.header.layout.num_kv_heads;
  shape->tokens = static_cast<int>(block.header.token_count);
  shape->dim = block.header.layout.head_dim;
  shape->layer_begin = static_cast<int>(block.header.layer_begin);
  if (block.header.token_count == 0 || block.header.token_count > (1u << 24)) {
    return absl::DataLossError(absl::StrCat("block token count ", block.header.token_count, " out of range"));
  }
  return std::vector<absl::Span<const uint8_t>>(block.sections.begin() + 1, block.sections.end());
}

absl::Status KvCodec::Decode(const BlockView& block, float* k, float* v) const {
  Shape shape;
  ASSIGN_OR_RETURN(auto sections, CheckBlock(block, &shape));
  return DecodeSections(sections, shape, k, v);
}

namespace {
absl::Status CheckRows(absl::Span<const int> rows, int tokens) {
  for (int r : rows) {
    if (r < 0 || r >= tokens) {
      return absl::InvalidArgumentError(absl::StrCat("row ", r, " outside the block's ", tokens, " tokens"));
    }
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status KvCodec::DecodeRows(const BlockView& block, absl::Span<const int> rows, float* k, float* v) const {
  Shape shape;
  ASSIGN_OR_RETURN(auto sections, CheckBlock(block, &shape));
  RETURN_IF_ERROR(CheckRows(rows, shape.tokens));
  return DecodeRowsSections(sections, shape, rows, k, v);
}

absl::Status KvCodec::AttendRows(const BlockView& block, absl::Span<const int> rows, const float* q, int group,
                                 float scale, float* out, float* lse, std::vector<float>* scratch) const {
  Shape shape;
  ASSIGN_OR_RETURN(auto sections, CheckBlock(block, &shape));
  RETURN_IF_ERROR(CheckRows(rows, shape.tokens));
  if (group < 1) return absl::InvalidArgumentError(absl::StrCat("attend: group ", group));
  std::vector<float> own;
  return AttendRowsSections(sections, shape, rows, q, group, scale, out, lse, scratch ? scratch : &own);
}

absl::Status KvCodec::AttendRowsSections(const std::vector<absl::Span<const uint8_t>>& sections, const Shape& shape,
                                         absl::Span<const int> rows, const float* q, int group, float scale,
                                         float* out, float* lse, std::vector<float>* scratch) const {
  const size_t per = size_t(shape.heads) * rows.size() * shape.dim;  // decoded K (and V) rows
  if (scratch->size() < 2 * per) scratch->resize(2 * per);
  float* k = scratch->data();
  float* v = k + per;
  RETURN_IF_ERROR(DecodeRowsSections(sections, shape, rows, k, v));
  const int64_t R = static_cast<int64_t>(rows.size());
  for (int h = 0; h < shape.heads; ++h) {
    const size_t qh = size_t(h) * group * shape.dim;
    AttendGroup(q + qh, group, k + size_t(h) * R * shape.dim, v + size_t(h) * R * shape.dim, R, shape.dim,
                shape.dim, scale, out + qh, lse + size_t(h) * group);
  }
  return absl::OkStatus();
}

absl::Status KvCodec::RowByteRanges(const BlockView& block, absl::Span<const int> rows,
                                    std::vector<absl::Span<const uint8_t>>* ranges) const {
  Shape shape;
  ASSIGN_OR_RETURN(auto sections, CheckBlock(block, &shape));
  RETURN_IF_ERROR(CheckRows(rows, shape.tokens));
  ranges->clear();
  return RowRangesSections(sections, shape, rows, ranges);
}

BitsPerElement KvCodec::Bits(const BlockView& block, size_t block_bytes) const {
  const double elements = double(block.header.layer_count) * block.header.layout.num_kv_heads *
                          block.header.token_count * block.header.layout.head_dim;
  size_t kb = 0, vb = 0, owned = 0;
  const std::vector<Owner> owners = SectionOwners(block.sections.size() - 1);
  for (size_t i = 1; i < block.sections.size(); ++i) {
    const Owner o = i - 1 < owners.size() ? owners[i - 1] : Owner::kShared;
    if (o == Owner::kK) kb += block.sections[i].size(), owned += block.sections[i].size();
    if (o == Owner::kV) vb += block.sections[i].size(), owned += block.sections[i].size();
  }
  const double shared = double(block_bytes - owned) / 2;
  BitsPerElement b;
  if (elements > 0) {
    b.k = 8 * (kb + shared) / elements;
    b.v = 8 * (vb + shared) / elements;
  }
  return b;
}

// ---------------------------------------------------------------------------
// f32 / f16 / bf16 passthrough.
namespace {

class RawCodec final : public KvCodec {
 public:
  explicit RawCodec(CodecId id) : id_(id) {}
  CodecId id() const override { return id_; }
  std::string name() const override {
    return id_ == CodecId::kF32 ? "f32" : id_ == CodecId::kF16 ? "f16" : "bf16";
  }
  std::string params() const override { return ""; }

 protected:
  size_t Width() const { return id_ == CodecId::kF32 ? 4 : 2; }

  absl::Status EncodeSections(const KvChunkRef& c, EncodeOptions*, std::vector<std::string>* sections) const override {
    const size_t n = size_t(c.layer_count) * c.layout.num_kv_heads * c.tokens * c.layout.head_dim;
    for (const float* x : {c.k, c.v}) {
      std::string s(n * Width(), '\0');
      uint8_t* p = reinterpret_cast<uint8_t*>(s.data());
      for (size_t i = 0; i < n; ++i) {
        if (id_ == CodecId::kF32) StoreLE<float>(p + 4 * i, x[i]);
        else StoreLE<uint16_t>(p + 2 * i, id_ == CodecId::kF16 ? FloatToHalf(x[i]) : FloatToBf16(x[i]));
      }
      sections->push_back(std::move(s));
    }
    return absl::OkStatus();
  }

  float Load(const uint8_t* p, size_t i) const {
    if (id_ == CodecId::kF32) return LoadLE<float>(p + 4 * i);
    const uint16_t h = LoadLE<uint16_t>(p + 2 * i);
    return id_ == CodecId::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
  }

  // n consecutive values from element i.
  void LoadN(const uint8_t* p, size_t i, size_t n, float* out) const {
    if (id_ == CodecId::kF16) return HalfToFloatN(p + 2 * i, out, n);
    for (size_t j = 0; j < n; ++j) out[j] = Load(p, i + j);
  }

  absl::Status Check(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape) const {
    const size_t want = size_t(shape.heads) * shape.tokens * shape.dim * Width();
    if (s.size() != 2 || s[0].size() != want || s[1].size() != want) {
      return absl::DataLossError(absl::StrCat(name(), " block sections do not hold ", want, " bytes each"));
    }
    return absl::OkStatus();
  }

  absl::Status DecodeSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape, float* k,
                              float* v) const override {
    RETURN_IF_ERROR(Check(s, shape));
    const size_t n = size_t(shape.heads) * shape.tokens * shape.dim;
    LoadN(s[0].data(), 0, n, k);
    LoadN(s[1].data(), 0, n, v);
    return absl::OkStatus();
  }

  absl::Status DecodeRowsSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                                  absl::Span<const int> rows, float* k, float* v) const override {
    RETURN_IF_ERROR(Check(s, shape));
    for (int h = 0; h < shape.heads; ++h) {
      for (size_t r = 0; r < rows.size(); ++r) {
        const size_t src = (size_t(h) * shape.tokens + rows[r]) * shape.dim;
        const size_t dst = (size_t(h) * rows.size() + r) * shape.dim;
        LoadN(s[0].data(), src, shape.dim, k + dst);
        LoadN(s[1].data(), src, shape.dim, v + dst);
      }
    }
    return absl::OkStatus();
  }

  std::vector<Owner> SectionOwners(size_t) const override { return {Owner::kK, Owner::kV}; }

  // f16 rows are read in place (AttendGroupHalfRows), per head.
  absl::Status AttendRowsSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                                  absl::Span<const int> rows, const float* q, int group, float scale, float* out,
                                  float* lse, std::vector<float>* scratch) const override {
    if (id_ != CodecId::kF16) {
      return KvCodec::AttendRowsSections(s, shape, rows, q, group, scale, out, lse, scratch);
    }
    RETURN_IF_ERROR(Check(s, shape));
    const int64_t row_bytes = int64_t(shape.dim) * 2;
    for (int h = 0; h < shape.heads; ++h) {
      const size_t head = size_t(h) * shape.tokens * row_bytes, qh = size_t(h) * group * shape.dim;
      AttendGroupHalfRows(q + qh, group, s[0].data() + head, s[1].data() + head, rows.data(),
                          static_cast<int64_t>(rows.size()), shape.dim, row_bytes, scale, out + qh,
                          lse + size_t(h) * group);
    }
    return absl::OkStatus();
  }

  absl::Status RowRangesSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                                 absl::Span<const int> rows,
                                 std::vector<absl::Span<const uint8_t>>* ranges) const override {
    RETURN_IF_ERROR(Check(s, shape));
    const size_t row = shape.dim * Width();
    for (int h = 0; h < shape.heads; ++h) {
      for (int r : rows) {
        const size_t off = (size_t(h) * shape.tokens + r) * row;
        ranges->push_back(s[0].subspan(off, row));
        ranges->push_back(s[1].subspan(off, row));
      }
    }
    return absl::OkStatus();
  }

 private:
  CodecId id_;
};

}  // namespace

namespace codec_internal {
absl::StatusOr<std::unique_ptr<KvCodec>> MakeRawCodec(CodecId id, ParamReader* p) {
  RETURN_IF_ERROR(p->Finish());
  return std::unique_ptr<KvCodec>(new RawCodec(id));
}
}  // namespace codec_internal

absl::StatusOr<std::unique_ptr<KvCodec>> MakeCodec(absl::string_view spec) {
  const size_t colon = spec.find(':');
  const std::string name(spec.substr(0, colon));
  ASSIGN_OR_RETURN(auto params, ParseParams(colon == absl::string_view::npos ? "" : spec.substr(colon + 1)));
  ParamReader p(std::move(params));
  using namespace codec_internal;
  if (name == "f32") return MakeRawCodec(CodecId::kF32, &p);
  if (name == "f16") return MakeRawCodec(CodecId::kF16, &p);
  if (name == "bf16") return MakeRawCodec(CodecId::kBF16, &p);
  if (name == "kivi") return MakeGroupQuantCodec(CodecId::kKivi, &p);
  if (name == "qwc") return MakeGroupQuantCodec(CodecId::kQwc, &p);
  if (name == "squat") return MakeSquatCodec(&p);
  if (name == "gear") return MakeGearCodec(true, &p);
  if (name == "gear_l") return MakeGearCodec(false, &p);
  if (name == "commvq") return MakeCommVqCodec(&p);
  return absl::InvalidArgumentError(absl::StrCat("unknown codec '", name,
                                                 "'; known: f32, f16, bf16, kivi, qwc, gear, gear_l, squat, commvq"));
}

StreamingParams StreamingParamsOf(const KvCodec& codec) {
  StreamingParams sp;
  auto params = ParseParams(codec.params());
  if (!params.ok()) return sp;
  auto get = [&](const char* key, int def) {
    auto it = params->find(key);
    int v;
    return it != params->end() && absl::SimpleAtoi(it->second, &v) ? v : def;
  };
  sp.residual = get("residual", 0);
  sp.chunk = get("buffer", get("kgroup", get("group", 32)));
  sp.pre_rope = get("pre_rope", 0) != 0;
  auto qs = params->find("qspace");
  sp.query_pre_rope = qs != params->end() && qs->second == "pre";
  return sp;
}

absl::StatusOr<std::unique_ptr<KvCodec>> CodecForBlock(const BlockView& block) {
  if (block.sections.empty()) return absl::DataLossError("block has no parameter section");
  const std::string params(block.sections[0].begin(), block.sections[0].end());
  std::string name;
  switch (static_cast<CodecId>(block.header.codec_id)) {
    case CodecId::kF32: name = "f32"; break;
    case CodecId::kF16: name = "f16"; break;
    case CodecId::kBF16: name = "bf16"; break;
    case CodecId::kKivi: name = "kivi"; break;
    case CodecId::kQwc: name = "qwc"; break;
    case CodecId::kSquat: name = "squat"; break;
    case CodecId::kCommVq: name = "commvq"; break;
    case CodecId::kGear: {
      // GEAR and GEAR-L share the id; the parameters say which.
      name = params.find("sparse=0") != std::string::npos ? "gear_l" : "gear";
      break;
    }
    default:
      return absl::DataLossError(absl::StrCat("unknown codec id ", block.header.codec_id));
  }
  auto codec = MakeCodec(params.empty() ? name : name + ":" + params);
  if (!codec.ok()) return absl::DataLossError(absl::StrCat("block parameters: ", codec.status().message()));
  return codec;
}

}  // namespace kvrecall
