#include "store/protocol.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"

namespace kvrecall {
namespace {

absl::Status Malformed(absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat("malformed message: ", what)); }

void AppendKey(std::string* out, const BlockKey& k) {
  AppendLE<uint64_t>(out, k.lo);
  AppendLE<uint64_t>(out, k.hi);
}

void AppendHeader(std::string* out, const MessageHeader& h) {
  AppendLE<uint32_t>(out, kProtocolMagic);
  AppendLE<uint16_t>(out, h.version);
  AppendLE<uint16_t>(out, h.op);
  AppendLE<uint64_t>(out, h.request_id);
  AppendLE<uint32_t>(out, h.status);
  AppendLE<uint32_t>(out, h.token_len);
  AppendLE<uint32_t>(out, h.body_len);
  AppendLE<uint32_t>(out, h.flags);
  AppendLE<uint64_t>(out, h.payload_len);
}

// Bounds-checked cursor over a body.
class Cursor {
 public:
  explicit Cursor(absl::Span<const uint8_t> b) : p_(b.data()), n_(b.size()) {}
  template <typename T>
  bool Get(T* v) {
    if (n_ - off_ < sizeof(T)) return false;
    *v = LoadLE<T>(p_ + off_);
    off_ += sizeof(T);
    return true;
  }
  bool Key(BlockKey* k) { return Get(&k->lo) && Get(&k->hi); }
  size_t left() const { return n_ - off_; }
  bool done() const { return off_ == n_; }

 private:
  const uint8_t* p_;
  size_t n_, off_ = 0;
};

// The count prefix of a batch: at least one item, at most kMaxItems, and no
// more than the remaining bytes could hold at `min_item_bytes` each.
bool Count(Cursor* c, size_t min_item_bytes, uint32_t* n) {
  return c->Get(n) && *n >= 1 && *n <= kMaxItems && uint64_t(*n) * min_item_bytes <= c->left();
}

bool IsKnownOp(uint16_t op) { return op >= uint16_t(Op::kPut) && op <= kLastOp; }

// Items locate payload ranges: back to back in item order (no gaps, no
// overlap), inside the payload.
absl::Status CheckRanges(uint64_t payload_len, uint64_t offset, uint64_t length, uint64_t* end) {
  if (offset != *end || length > payload_len - offset) {
    return Malformed("item ranges are not back to back inside the payload");
  }
  *end = offset + length;
  return absl::OkStatus();
}

}  // namespace

absl::Status Reply::status() const {
  if (header.status == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(header.status), error);
}

std::string EncodeRequest(const Request& r) {
  std::string body;
  switch (r.op()) {
    case Op::kPut:
      AppendLE<uint32_t>(&body, static_cast<uint32_t>(r.puts.size()));
      for (const PutItem& p : r.puts) {
        AppendKey(&body, p.key);
        AppendLE<uint64_t>(&body, p.offset);
        AppendLE<uint32_t>(&body, p.length);
      }
      break;
    case Op::kGet:
    case Op::kExists:
    case Op::kDelete:
      AppendLE<uint32_t>(&body, static_cast<uint32_t>(r.keys.size()));
      for (const BlockKey& k : r.keys) AppendKey(&body, k);
      break;
    case Op::kAttend:
    case Op::kGather:
      if (r.op() == Op::kAttend) {
        AppendLE<uint32_t>(&body, r.attend_group);
        AppendLE<float>(&body, r.attend_scale);
      }
      AppendLE<uint32_t>(&body, static_cast<uint32_t>(r.gathers.size()));
      for (const GatherItem& g : r.gathers) {
        AppendKey(&body, g.key);
        AppendLE<uint32_t>(&body, static_cast<uint32_t>(g.rows.size()));
        for (uint32_t row : g.rows) AppendLE<uint32_t>(&body, row);
      }
      break;
    case Op::kRecall:
      AppendLE<uint32_t>(&body, static_cast<uint32_t>(r.recall.size()));
      for (const RecallSample& x : r.recall) {
        AppendLE<float>(&body, x.topk_recall);
        AppendLE<float>(&body, x.mass_recall);
        AppendLE<float>(&body, x.output_error);
      }
      break;
  }
  MessageHeader h = r.header;
  h.token_len = static_cast<uint32_t>(r.token.size());
  h.body_len = static_cast<uint32_t>(body.size());
  std::string out;
  out.reserve(kHeaderBytes + r.token.size() + body.size());
  AppendHeader(&out, h);
  out += r.token;
  out += body;
  return out;
}

std::string EncodeReply(const Reply& r) {
  std::string body;
  if (r.header.status != 0) {
    body = r.error.substr(0, kMaxErrorBytes);
  } else if ((r.header.op & ~kReplyBit) == uint16_t(Op::kExists)) {
    AppendLE<uint32_t>(&body, static_cast<uint32_t>(r.present.size()));
    AppendLE<uint32_t>(&body, r.prefix);
    std::string bits((r.present.size() + 7) / 8, '\0');
    for (size_t i = 0; i < r.present.size(); ++i) {
      if (r.present[i]) bits[i / 8] = static_cast<char>(bits[i / 8] | (1 << (i % 8)));
    }
    body += bits;
  } else {
    AppendLE<uint32_t>(&body, static_cast<uint32_t>(r.items.size()));
    for (const ReplyItem& it : r.items) {
      AppendLE<uint8_t>(&body, it.code);
      AppendLE<uint64_t>(&body, it.offset);
      AppendLE<uint32_t>(&body, it.length);
    }
  }
  MessageHeader h = r.header;
  h.token_len = 0;
  h.body_len = static_cast<uint32_t>(body.size());
  std::string out;
  AppendHeader(&out, h);
  out += body;
  return out;
}

Reply ErrorReply(uint64_t request_id, uint16_t op, const absl::Status& status) {
  Reply r;
  r.header.op = static_cast<uint16_t>(op | kReplyBit);
  r.header.request_id = request_id;
  r.header.status = static_cast<uint32_t>(status.ok() ? absl::StatusCode::kUnknown : status.code());
  r.error = std::string(status.message().substr(0, kMaxErrorBytes));
  return r;
}

absl::StatusOr<MessageHeader> ParseHeader(absl::Span<const uint8_t> w) {
  if (w.size() < kHeaderBytes) return Malformed(absl::StrCat(w.size(), " bytes, shorter than the header"));
  const uint8_t* p = w.data();
  if (LoadLE<uint32_t>(p) != kProtocolMagic) return Malformed("bad magic");
  MessageHeader h;
  h.version = LoadLE<uint16_t>(p + 4);
  if (h.version != kProtocolVersion) {
    return absl::UnimplementedError(absl::StrCat("protocol version ", h.version, " (this side speaks ", kProtocolVersion, ")"));
  }
  h.op = LoadLE<uint16_t>(p + 6);
  h.request_id = LoadLE<uint64_t>(p + 8);
  h.status = LoadLE<uint32_t>(p + 16);
  h.token_len = LoadLE<uint32_t>(p + 20);
  h.body_len = LoadLE<uint32_t>(p + 24);
  h.flags = LoadLE<uint32_t>(p + 28);
  h.payload_len = LoadLE<uint64_t>(p + 32);
  // Op 0 appears only in error replies to requests whose op could not be read.
  const bool unreadable_op_error = h.op == kReplyBit && h.status != 0;
  if (!IsKnownOp(h.op & ~kReplyBit) && !unreadable_op_error) return Malformed(absl::StrCat("unknown op ", h.op & ~kReplyBit));
  if (h.token_len > kMaxTokenBytes || h.body_len > kMaxBodyBytes || h.payload_len > kMaxPayloadBytes) {
    return Malformed("a length exceeds its limit");
  }
  if (h.flags & ~kKnownFlags) return Malformed("unknown flags");
  if (h.status > 16) return Malformed("status out of range");
  if (uint64_t(kHeaderBytes) + h.token_len + h.body_len != w.size()) {
    return Malformed(absl::StrCat("header says ", kHeaderBytes + uint64_t(h.token_len) + h.body_len, " bytes, got ", w.size()));
  }
  return h;
}

absl::StatusOr<Request> ParseRequest(absl::Span<const uint8_t> w) {
  absl::StatusOr<MessageHeader> h = ParseHeader(w);
  if (!h.ok()) return h.status();
  if (h->op & kReplyBit) return Malformed("a reply where a request was expected");
  if (h->status != 0) return Malformed("request with a status");
  Request r;
  r.header = *h;
  r.token.assign(reinterpret_cast<const char*>(w.data() + kHeaderBytes), h->token_len);
  Cursor c(w.subspan(kHeaderBytes + h->token_len));
  uint32_t n = 0;
  switch (r.op()) {
    case Op::kPut: {
      if (!Count(&c, 28, &n)) return Malformed("bad put count");
      uint64_t end = 0;
      r.puts.resize(n);
      for (PutItem& p : r.puts) {
        if (!c.Key(&p.key) || !c.Get(&p.offset) || !c.Get(&p.length)) return Malformed("truncated put item");
        if (absl::Status s = CheckRanges(h->payload_len, p.offset, p.length, &end); !s.ok()) return s;
      }
      if (end != h->payload_len) return Malformed("payload bytes not covered by put items");
      break;
    }
    case Op::kGet:
    case Op::kExists:
    case Op::kDelete:
      if (!Count(&c, 16, &n)) return Malformed("bad key count");
      r.keys.resize(n);
      for (BlockKey& k : r.keys) c.Key(&k);
      if (h->payload_len != 0) return Malformed("payload on a request that carries none");
      break;
    case Op::kAttend:
    case Op::kGather: {
      if (r.op() == Op::kAttend) {
        if (!c.Get(&r.attend_group) || !c.Get(&r.attend_scale)) return Malformed("truncated attend header");
        if (r.attend_group < 1 || r.attend_group > kMaxAttendGroup || !std::isfinite(r.attend_scale) ||
            !(r.attend_scale > 0)) {
          return Malformed("attend group or scale out of range");
        }
        if (h->payload_len == 0 || h->payload_len % 4 != 0 || h->payload_len > kMaxAttendQueryBytes) {
          return Malformed("attend queries must be 1..16 MiB of f32");
        }
      }
      if (!Count(&c, 20, &n)) return Malformed("bad gather count");
      uint64_t total = 0;
      r.gathers.resize(n);
      for (GatherItem& g : r.gathers) {
        uint32_t rows = 0;
        if (!c.Key(&g.key) || !c.Get(&rows) || rows == 0 || uint64_t(rows) * 4 > c.left()) {
          return Malformed("truncated gather item");
        }
        total += rows;
        if (total > kMaxGatherRows) return Malformed("too many gather rows");
        g.rows.resize(rows);
        for (uint32_t& row : g.rows) c.Get(&row);
      }
      if (r.op() == Op::kGather && h->payload_len != 0) return Malformed("payload on a request that carries none");
      break;
    }
    case Op::kRecall: {
      if (!Count(&c, 12, &n) || n > kMaxRecallSamples) return Malformed("bad recall sample count");
      r.recall.resize(n);
      for (RecallSample& x : r.recall) {
        c.Get(&x.topk_recall), c.Get(&x.mass_recall), c.Get(&x.output_error);
        auto unit = [](float v) { return std::isfinite(v) && v >= 0 && v <= 1; };
        if (!unit(x.topk_recall) || !unit(x.mass_recall) || !std::isfinite(x.output_error) || x.output_error < 0 ||
            x.output_error > 1e6f) {
          return Malformed("recall sample out of range");
        }
      }
      if (h->payload_len != 0) return Malformed("payload on a request that carries none");
      break;
    }
  }
  if (!c.done()) return Malformed("trailing bytes in the body");
  if ((r.header.flags & kFlagDurable) && r.op() != Op::kPut) return Malformed("durable flag on a non-put");
  if ((r.header.flags & kFlagGatherCompressed) && r.op() != Op::kGather) return Malformed("gather flag on a non-gather");
  return r;
}

absl::StatusOr<Reply> ParseReply(absl::Span<const uint8_t> w) {
  absl::StatusOr<MessageHeader> h = ParseHeader(w);
  if (!h.ok()) return h.status();
  if (!(h->op & kReplyBit)) return Malformed("a request where a reply was expected");
  if (h->token_len != 0) return Malformed("reply with a token");
  Reply r;
  r.header = *h;
  absl::Span<const uint8_t> body = w.subspan(kHeaderBytes);
  if (h->status != 0) {
    if (body.size() > kMaxErrorBytes) return Malformed("error text too long");
    r.error.assign(reinterpret_cast<const char*>(body.data()), body.size());
    return r;
  }
  Cursor c(body);
  uint32_t n = 0;
  if ((h->op & ~kReplyBit) == uint16_t(Op::kExists)) {
    if (!Count(&c, 0, &n) || !c.Get(&r.prefix) || r.prefix > n || c.left() != (n + 7) / 8) {
      return Malformed("bad exists reply");
    }
    r.present.resize(n);
    std::vector<uint8_t> bits((n + 7) / 8);
    for (uint8_t& b : bits) c.Get(&b);
    for (uint32_t i = 0; i < n; ++i) r.present[i] = (bits[i / 8] >> (i % 8)) & 1;
    if (n % 8 != 0 && (bits.back() >> (n % 8)) != 0) return Malformed("exists bitmap padding is not zero");
    for (uint32_t i = 0; i < r.prefix; ++i) {
      if (!r.present[i]) return Malformed("exists prefix covers an absent key");
    }
    return r;
  }
  if (!Count(&c, 13, &n)) return Malformed("bad reply count");
  r.items.resize(n);
  uint64_t end = 0;
  for (ReplyItem& it : r.items) {
    if (!c.Get(&it.code) || !c.Get(&it.offset) || !c.Get(&it.length)) return Malformed("truncated reply item");
    if (it.code > 16) return Malformed("item code out of range");
    if (it.length > 0) {
      if (absl::Status s = CheckRanges(h->payload_len, it.offset, it.length, &end); !s.ok()) return s;
    } else if (it.offset != 0) {
      return Malformed("empty reply item with an offset");
    }
  }
  if (end != h->payload_len) return Malformed("reply payload bytes not covered by items");
  if (!c.done()) return Malformed("trailing bytes in the reply");
  return r;
}

}  // namespace kvrecall
