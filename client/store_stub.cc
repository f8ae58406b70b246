#include "client/store_stub.h"

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "codec/container.h"
#include "common/hash.h"
#include "common/status.h"
#include "store/protocol.h"

namespace kvrecall {
namespace {

absl::StatusOr<Reply> CheckReply(const std::string& head, uint64_t id, Op op, size_t items) {
  ASSIGN_OR_RETURN(Reply r, ParseReply(AsBytes(head)));
  if (r.header.request_id != id && r.header.status == 0) return absl::InternalError("reply to another request");
  if ((r.header.op & ~kReplyBit) != uint16_t(op) && r.header.status == 0) return absl::InternalError("reply to another op");
  RETURN_IF_ERROR(r.status());
  const size_t got = op == Op::kExists ? r.present.size() : r.items.size();
  if (got != items) return absl::InternalError(absl::StrCat("reply has ", got, " items for ", items));
  return r;
}

absl::Status ItemStatus(uint8_t code) {
  if (code == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(code), "from the store");
}

}  // namespace

absl::StatusOr<std::vector<absl::Status>> StoreStub::Put(absl::Span<const BlockKey> keys, const ConstIov& blocks,
                                                         bool durable) {
  if (keys.size() != blocks.size()) return absl::InvalidArgumentError("one block per key");
  Request req;
  req.header.op = uint16_t(Op::kPut);
  req.header.request_id = NextId();
  req.header.flags = durable ? kFlagDurable : 0;
  req.token = token_;
  uint64_t off = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    req.puts.push_back({keys[i], off, static_cast<uint32_t>(blocks[i].size())});
    off += blocks[i].size();
  }
  req.header.payload_len = off;
  CallArgs args;
  args.head = EncodeRequest(req);
  args.payload = blocks;
  args.timeout = timeout_;
  args.sink = [](absl::Span<const uint8_t>, uint64_t n) -> absl::StatusOr<MutableIov> {
    if (n != 0) return absl::InvalidArgumentError("put reply with a payload");
    return MutableIov{};
  };
  ASSIGN_OR_RETURN(std::string head, t_->Call(std::move(args)));
  ASSIGN_OR_RETURN(Reply r, CheckReply(head, req.header.request_id, Op::kPut, keys.size()));
  std::vector<absl::Status> out;
  for (const ReplyItem& it : r.items) out.push_back(ItemStatus(it.code));
  return out;
}

absl::StatusOr<std::vector<absl::StatusOr<size_t>>> StoreStub::Get(absl::Span<const BlockKey> keys,
                                                                   const MutableIov& dst) {
  if (keys.size() != dst.size()) return absl::InvalidArgumentError("one buffer per key");
  Request req;
  req.header.op = uint16_t(Op::kGet);
  req.header.request_id = NextId();
  req.token = token_;
  req.keys.assign(keys.begin(), keys.end());
  std::vector<absl::StatusOr<size_t>> out(keys.size(), absl::NotFoundError("miss"));
  std::vector<uint8_t> scratch;
  CallArgs args;
  args.head = EncodeRequest(req);
  args.timeout = timeout_;
  const uint64_t id = req.header.request_id;
  args.sink = [&](absl::Span<const uint8_t> head, uint64_t n) -> absl::StatusOr<MutableIov> {
    ASSIGN_OR_RETURN(Reply r, ParseReply(head));
    if (r.header.status != 0 || r.items.size() != keys.size() || r.header.payload_len != n || r.header.request_id != id) {
      if (n == 0) return MutableIov{};
      return absl::InternalError("get reply does not match the request");
    }
    MutableIov iov;
    for (size_t i = 0; i < r.items.size(); ++i) {
      const ReplyItem& it = r.items[i];
      if (it.code != 0) {
        out[i] = ItemStatus(it.code);
        continue;
      }
      if (it.length > dst[i].size()) {  // too small: receive into scratch, report OUT_OF_RANGE
        out[i] = absl::OutOfRangeError(absl::StrCat("block is ", it.length, " bytes, buffer ", dst[i].size()));
        scratch.resize(std::max<size_t>(scratch.size(), it.length));
        iov.push_back({scratch.data(), it.length});
        continue;
      }
      iov.push_back(dst[i].subspan(0, it.length));
      out[i] = size_t{it.length};
    }
    return iov;
  };
  ASSIGN_OR_RETURN(std::string head, t_->Call(std::move(args)));
  RETURN_IF_ERROR(CheckReply(head, id, Op::kGet, keys.size()).status());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!out[i].ok()) continue;
    // Never hand out bytes that did not verify.
    if (absl::Status s = ParseBlock(dst[i].subspan(0, *out[i])).status(); !s.ok()) {
      out[i] = absl::DataLossError(absl::StrCat("block failed verification in transit: ", s.message()));
    }
  }
  return out;
}

absl::StatusOr<Reply> StoreStub::KeysCall(Op op, absl::Span<const BlockKey> keys) {
  Request req;
  req.header.op = uint16_t(op);
  req.header.request_id = NextId();
  req.token = token_;
  req.keys.assign(keys.begin(), keys.end());
  CallArgs args;
  args.head = EncodeRequest(req);
  args.timeout = timeout_;
  ASSIGN_OR_RETURN(std::string head, t_->Call(std::move(args)));
  return CheckReply(head, req.header.request_id, op, keys.size());
}

absl::StatusOr<StoreStub::ExistsReply> StoreStub::Exists(absl::Span<const BlockKey> chain) {
  ASSIGN_OR_RETURN(Reply r, KeysCall(Op::kExists, chain));
  return ExistsReply{r.prefix, r.present};
}

absl::StatusOr<std::vector<absl::Status>> StoreStub::Delete(absl::Span<const BlockKey> keys) {
  ASSIGN_OR_RETURN(Reply r, KeysCall(Op::kDelete, keys));
  std::vector<absl::Status> out;
  for (const ReplyItem& it : r.items) out.push_back(ItemStatus(it.code));
  return out;
}

absl::Status StoreStub::ReportRecall(const std::vector<RecallSample>& samples) {
  if (samples.empty() || samples.size() > kMaxRecallSamples) return absl::InvalidArgumentError("recall: 1..4096 samples");
  Request req;
  req.header.op = uint16_t(Op::kRecall);
  req.header.request_id = NextId();
  req.token = token_;
  req.recall = samples;
  CallArgs args;
  args.head = EncodeRequest(req);
  args.timeout = timeout_;
  args.sink = [](absl::Span<const uint8_t>, uint64_t n) -> absl::StatusOr<MutableIov> {
    if (n != 0) return absl::InternalError("recall reply with a payload");
    return MutableIov{};
  };
  ASSIGN_OR_RETURN(std::string head, t_->Call(std::move(args)));
  ASSIGN_OR_RETURN(Reply r, CheckReply(head, req.header.request_id, Op::kRecall, 1));
  return ItemStatus(r.items[0].code);
}

absl::StatusOr<StoreStub::AttendResult> StoreStub::Attend(const std::vector<GatherRequestItem>& items, int group,
                                                          float scale, absl::Span<const float> queries, int head_dim) {
  if (head_dim < 1 || queries.size() % size_t(head_dim) != 0) return absl::InvalidArgumentError("attend: bad query shape");
  Request req;
  req.header.op = uint16_t(Op::kAttend);
  req.header.request_id = NextId();
  req.header.payload_len = queries.size() * sizeof(float);
  req.token = token_;
  req.attend_group = static_cast<uint32_t>(group);
  req.attend_scale = scale;
  for (const auto& g : items) req.gathers.push_back({g.key, g.rows});
  AttendResult res;
  res.out.resize(queries.size());
  res.lse.resize(queries.size() / head_dim);
  uint64_t sum = 0;
  absl::Status item_status;
  CallArgs args;
  args.head = EncodeRequest(req);
  args.payload = {{reinterpret_cast<const uint8_t*>(queries.data()), queries.size() * sizeof(float)}};
  args.timeout = timeout_;
  const uint64_t id = req.header.request_id;
  args.sink = [&](absl::Span<const uint8_t> head, uint64_t n) -> absl::StatusOr<MutableIov> {
    ASSIGN_OR_RETURN(Reply r, ParseReply(head));
    if (r.header.status != 0 || r.items.size() != 1 || r.header.request_id != id) {
      if (n == 0) return MutableIov{};
      return absl::InternalError("attend reply does not match the request");
    }
    if (r.items[0].code != 0) {
      item_status = ItemStatus(r.items[0].code);
      return MutableIov{};
    }
    if (n != (res.out.size() + res.lse.size()) * sizeof(float) + 8) return absl::InternalError("attend reply size");
    return MutableIov{{reinterpret_cast<uint8_t*>(res.out.data()), res.out.size() * sizeof(float)},
                      {reinterpret_cast<uint8_t*>(res.lse.data()), res.lse.size() * sizeof(float)},
                      {reinterpret_cast<uint8_t*>(&sum), 8}};
  };
  ASSIGN_OR_RETURN(std::string head, t_->Call(std::move(args)));
  RETURN_IF_ERROR(CheckReply(head, id, Op::kAttend, 1).status());
  RETURN_IF_ERROR(item_status);
  Checksum64Stream h;
  h.Update(res.out.data(), res.out.size() * sizeof(float));
  h.Update(res.lse.data(), res.lse.size() * sizeof(float));
  if (h.Digest() != LoadLE<uint64_t>(reinterpret_cast<const uint8_t*>(&sum))) {
    return absl::DataLossError("attention result failed verification in transit");
  }
  return res;
}

absl::StatusOr<std::vector<absl::StatusOr<std::vector<float>>>> StoreStub::Gather(
    const std::vector<GatherRequestItem>& items) {
  Request req;
  req.header.op = uint16_t(Op::kGather);
  req.header.request_id = NextId();
  req.token = token_;
  for (const auto& g : items) req.gathers.push_back({g.key, g.rows});
  std::vector<absl::StatusOr<std::vector<float>>> out(items.size(), absl::NotFoundError("miss"));
  std::vector<uint64_t> sums(items.size());
  CallArgs args;
  args.head = EncodeRequest(req);
  args.timeout = timeout_;
  const uint64_t id = req.header.request_id;
  args.sink = [&](absl::Span<const uint8_t> head, uint64_t n) -> absl::StatusOr<MutableIov> {
    ASSIGN_OR_RETURN(Reply r, ParseReply(head));
    if (r.header.status != 0 || r.items.size() != items.size() || r.header.request_id != id) {
      if (n == 0) return MutableIov{};
      return absl::InternalError("gather reply does not match the request");
    }
    MutableIov iov;
    for (size_t i = 0; i < r.items.size(); ++i) {
      if (r.items[i].code != 0) {
        out[i] = ItemStatus(r.items[i].code);
        continue;
      }
      // Decoded rows, then their XXH3-64.
      if (r.items[i].length < 8 || (r.items[i].length - 8) % sizeof(float) != 0) {
        return absl::InternalError("gather item is not whole floats plus a checksum");
      }
      out[i] = std::vector<float>((r.items[i].length - 8) / sizeof(float));
      iov.push_back({reinterpret_cast<uint8_t*>(out[i]->data()), r.items[i].length - 8});
      iov.push_back({reinterpret_cast<uint8_t*>(&sums[i]), 8});
    }
    return iov;
  };
  ASSIGN_OR_RETURN(std::string head, t_->Call(std::move(args)));
  RETURN_IF_ERROR(CheckReply(head, id, Op::kGather, items.size()).status());
  for (size_t i = 0; i < items.size(); ++i) {
    if (!out[i].ok()) continue;
    const uint64_t want = LoadLE<uint64_t>(reinterpret_cast<const uint8_t*>(&sums[i]));
    if (Checksum64(out[i]->data(), out[i]->size() * sizeof(float)) != want) {
      out[i] = absl::DataLossError("gathered rows failed verification in transit");
    }
  }
  return out;
}

}  // namespace kvrecall
