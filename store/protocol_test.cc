#include "store/protocol.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

Request PutRequest() {
  Request r;
  r.header.op = uint16_t(Op::kPut);
  r.header.request_id = 77;
  r.header.flags = kFlagDurable;
  r.header.payload_len = 300;
  r.token = "tenant-a-token";
  r.puts = {{BlockKey{1, 2}, 0, 100}, {BlockKey{3, 4}, 100, 200}};
  return r;
}

TEST(Protocol, RequestsRoundTrip) {
  Request put = PutRequest();
  auto back = ParseRequest(Bytes(EncodeRequest(put)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->token, "tenant-a-token");
  EXPECT_EQ(back->header.request_id, 77u);
  ASSERT_EQ(back->puts.size(), 2u);
  EXPECT_EQ(back->puts[1].key, (BlockKey{3, 4}));
  EXPECT_EQ(back->puts[1].length, 200u);

  Request get;
  get.header.op = uint16_t(Op::kExists);
  get.keys = {BlockKey{5, 6}, BlockKey{7, 8}, BlockKey{9, 10}};
  back = ParseRequest(Bytes(EncodeRequest(get)));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->keys, get.keys);

  Request attend;
  attend.header.op = uint16_t(Op::kAttend);
  attend.header.payload_len = 4 * 32;
  attend.attend_group = 4;
  attend.attend_scale = 0.125f;
  attend.gathers = {{BlockKey{1, 1}, {0, 5}}};
  back = ParseRequest(Bytes(EncodeRequest(attend)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->attend_group, 4u);
  EXPECT_EQ(back->attend_scale, 0.125f);
  Request no_queries = attend;
  no_queries.header.payload_len = 0;
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(no_queries))).ok());
  Request bad_scale = attend;
  bad_scale.attend_scale = -1;
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(bad_scale))).ok());

  Request recall;
  recall.header.op = uint16_t(Op::kRecall);
  recall.recall = {{0.5f, 0.75f, 0.1f}, {1.0f, 0.0f, 3.0f}};
  back = ParseRequest(Bytes(EncodeRequest(recall)));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->recall.size(), 2u);
  EXPECT_EQ(back->recall[0].mass_recall, 0.75f);
  EXPECT_EQ(back->recall[1].output_error, 3.0f);
  for (const RecallSample bad : {RecallSample{1.5f, 0.5f, 0}, RecallSample{0.5f, -0.1f, 0},
                                 RecallSample{0.5f, 0.5f, -1}, RecallSample{NAN, 0.5f, 0},
                                 RecallSample{0.5f, 0.5f, INFINITY}}) {
    Request r = recall;
    r.recall[1] = bad;
    EXPECT_EQ(ParseRequest(Bytes(EncodeRequest(r))).status().code(), absl::StatusCode::kInvalidArgument);
  }
  Request none = recall;
  none.recall.clear();
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(none))).ok());
  Request with_payload = recall;
  with_payload.header.payload_len = 8;
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(with_payload))).ok());
  Request too_many = recall;
  too_many.recall.assign(kMaxRecallSamples + 1, RecallSample{});
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(too_many))).ok());

  Request gather;
  gather.header.op = uint16_t(Op::kGather);
  gather.header.flags = kFlagGatherCompressed;
  gather.gathers = {{BlockKey{1, 1}, {0, 5, 31}}, {BlockKey{2, 2}, {7}}};
  back = ParseRequest(Bytes(EncodeRequest(gather)));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->gathers[0].rows, (std::vector<uint32_t>{0, 5, 31}));
  EXPECT_EQ(back->gathers[1].key, (BlockKey{2, 2}));
}

TEST(Protocol, RepliesRoundTrip) {
  Reply r;
  r.header.op = uint16_t(Op::kGet) | kReplyBit;
  r.header.payload_len = 50;
  r.items = {{0, 0, 50}, {uint8_t(absl::StatusCode::kNotFound), 0, 0}};
  auto back = ParseReply(Bytes(EncodeReply(r)));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->items.size(), 2u);
  EXPECT_EQ(back->items[1].code, uint8_t(absl::StatusCode::kNotFound));

  Reply e;
  e.header.op = uint16_t(Op::kExists) | kReplyBit;
  e.present = {true, true, false, true, false, false, false, false, true};
  e.prefix = 2;
  back = ParseReply(Bytes(EncodeReply(e)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->present, e.present);
  EXPECT_EQ(back->prefix, 2u);

  Reply err = ErrorReply(9, uint16_t(Op::kPut), absl::PermissionDeniedError("wrong namespace token"));
  back = ParseReply(Bytes(EncodeReply(err)));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(back->status().message(), "wrong namespace token");
}

TEST(Protocol, MalformedMessagesAreRejected) {
  const std::string good = EncodeRequest(PutRequest());
  // Every truncation and every single-byte change in the fixed header or body
  // either fails to parse or parses to a consistent message; none crash.
  for (size_t len = 0; len < good.size(); ++len) {
    EXPECT_FALSE(ParseRequest(Bytes(good.substr(0, len))).ok()) << len;
  }
  EXPECT_FALSE(ParseRequest(Bytes(good + "x")).ok());
  std::string v = good;
  v[4] = 2;  // version 2
  EXPECT_EQ(ParseRequest(Bytes(v)).status().code(), absl::StatusCode::kUnimplemented);
  std::string op = good;
  op[6] = 42;  // unknown op
  EXPECT_EQ(ParseRequest(Bytes(op)).status().code(), absl::StatusCode::kInvalidArgument);
  Request overlap = PutRequest();
  overlap.puts[1].offset = 50;
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(overlap))).ok());
  Request outside = PutRequest();
  outside.header.payload_len = 250;
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(outside))).ok());
  Request uncovered = PutRequest();
  uncovered.header.payload_len = 400;
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(uncovered))).ok());
  Request empty;
  empty.header.op = uint16_t(Op::kGet);
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(empty))).ok());  // zero keys
  Request flags = PutRequest();
  flags.header.flags = 1u << 7;
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(flags))).ok());
  Request long_token = PutRequest();
  long_token.token.assign(kMaxTokenBytes + 1, 't');
  EXPECT_FALSE(ParseRequest(Bytes(EncodeRequest(long_token))).ok());
  // A reply is not a request and vice versa.
  Reply r = ErrorReply(1, uint16_t(Op::kGet), absl::InternalError("x"));
  EXPECT_FALSE(ParseRequest(Bytes(EncodeReply(r))).ok());
  EXPECT_FALSE(ParseReply(Bytes(good)).ok());
  // Random bytes with a valid header prefix.
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    std::string junk = good;
    for (int j = 0; j < 3; ++j) junk[rng() % junk.size()] = static_cast<char>(rng());
    auto p = ParseRequest(Bytes(junk));
    if (p.ok()) {
      EXPECT_EQ(EncodeRequest(*p), junk);  // accepted only if it is exactly a valid message
    }
  }
}

}  // namespace
}  // namespace kvrecall
