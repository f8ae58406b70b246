#include "codec/kv_trace.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "common/hash.h"
#include "common/status.h"

namespace kvrecall {
namespace {

constexpr uint32_t kTraceMagic = 0x5452564bu;  // "KVRT"
constexpr uint16_t kTraceVersion = 1;
constexpr size_t kTraceHeaderBytes = 4 + 2 + 2 + kEncodedLayoutBytes + 4;
constexpr size_t kRecordHeaderBytes = 16;

void AppendFloats(std::string* out, const std::vector<float>& v) {
  const size_t at = out->size();
  out->resize(at + 4 * v.size());
  uint8_t* p = reinterpret_cast<uint8_t*>(out->data() + at);
  for (size_t i = 0; i < v.size(); ++i) StoreLE<float>(p + 4 * i, v[i]);
}

}  // namespace

absl::Status WriteKvTrace(Env* env, const std::string& path, const KvTrace& trace) {
  RETURN_IF_ERROR(trace.layout.Validate());
  const KvLayout& l = trace.layout;
  std::string out(kTraceHeaderBytes, '\0');
  uint8_t* h = reinterpret_cast<uint8_t*>(out.data());
  StoreLE<uint32_t>(h, kTraceMagic);
  StoreLE<uint16_t>(h + 4, kTraceVersion);
  StoreLE<uint16_t>(h + 6, 0);
  EncodeLayout(l, h + 8);
  StoreLE<uint32_t>(h + 8 + kEncodedLayoutBytes, static_cast<uint32_t>(trace.records.size()));
  for (const KvTraceRecord& r : trace.records) {
    const size_t nq = size_t(r.tokens) * l.num_q_heads * l.head_dim;
    const size_t nk = size_t(r.tokens) * l.num_kv_heads * l.head_dim;
    if (r.q.size() != nq || r.q_pre_rope.size() != nq || r.k.size() != nk ||
        r.k_pre_rope.size() != nk || r.v.size() != nk || r.layer >= uint32_t(l.num_layers)) {
      return absl::InvalidArgumentError(absl::StrCat("trace record (story ", r.story, ", layer ", r.layer,
                                                     ") does not match the layout"));
    }
    AppendLE<uint32_t>(&out, r.story);
    AppendLE<uint32_t>(&out, r.layer);
    AppendLE<uint32_t>(&out, r.tokens);
    AppendLE<uint32_t>(&out, 0);
    for (const auto* t : {&r.q, &r.q_pre_rope, &r.k_pre_rope, &r.k, &r.v}) AppendFloats(&out, *t);
  }
  AppendLE<uint64_t>(&out, Checksum64(out.data(), out.size()));
  return WriteStringToFile(env, out, path, /*sync=*/true);
}

absl::StatusOr<KvTrace> ParseKvTrace(const std::string& bytes) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  if (n < kTraceHeaderBytes + 8) return absl::DataLossError(absl::StrCat("trace truncated: ", n, " bytes"));
  if (LoadLE<uint32_t>(p) != kTraceMagic) return absl::DataLossError("not a kvrecall KV trace (bad magic)");
  if (LoadLE<uint16_t>(p + 4) != kTraceVersion) {
    return absl::UnimplementedError(absl::StrCat("unknown KV trace version ", LoadLE<uint16_t>(p + 4)));
  }
  if (LoadLE<uint64_t>(p + n - 8) != Checksum64(p, n - 8)) {
    return absl::DataLossError("KV trace checksum mismatch (truncated or corrupted)");
  }
  KvTrace trace;
  ASSIGN_OR_RETURN(trace.layout, DecodeLayout(p + 8));
  const KvLayout& l = trace.layout;
  const uint32_t count = LoadLE<uint32_t>(p + 8 + kEncodedLayoutBytes);
  size_t off = kTraceHeaderBytes;
  const size_t end = n - 8;
  for (uint32_t i = 0; i < count; ++i) {
    if (end - off < kRecordHeaderBytes) return absl::DataLossError(absl::StrCat("trace record ", i, " truncated"));
    KvTraceRecord r;
    r.story = LoadLE<uint32_t>(p + off);
    r.layer = LoadLE<uint32_t>(p + off + 4);
    r.tokens = LoadLE<uint32_t>(p + off + 8);
    off += kRecordHeaderBytes;
    if (r.layer >= uint32_t(l.num_layers)) return absl::DataLossError(absl::StrCat("trace record ", i, ": bad layer"));
    const uint64_t nq = uint64_t(r.tokens) * l.num_q_heads * l.head_dim;
    const uint64_t nk = uint64_t(r.tokens) * l.num_kv_heads * l.head_dim;
    if ((end - off) / 4 < 2 * nq + 3 * nk) {
      return absl::DataLossError(absl::StrCat("trace record ", i, " runs past the end of the file"));
    }
    for (auto* t : {&r.q, &r.q_pre_rope, &r.k_pre_rope, &r.k, &r.v}) {
      const uint64_t cnt = (t == &r.q || t == &r.q_pre_rope) ? nq : nk;
      t->resize(cnt);
      for (uint64_t j = 0; j < cnt; ++j) (*t)[j] = LoadLE<float>(p + off + 4 * j);
      off += 4 * cnt;
    }
    trace.records.push_back(std::move(r));
  }
  if (off != end) return absl::DataLossError(absl::StrCat("trace has ", end - off, " unexpected bytes"));
  return trace;
}

absl::StatusOr<KvTrace> ReadKvTrace(Env* env, const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(env, path));
  absl::StatusOr<KvTrace> t = ParseKvTrace(bytes);
  if (!t.ok()) return Annotate(t.status(), path);
  return t;
}

}  // namespace kvrecall
