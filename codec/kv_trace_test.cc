#include "codec/kv_trace.h"

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

KvTrace Small() {
  KvTrace t;
  t.layout.num_layers = 2;
  t.layout.num_q_heads = 4;
  t.layout.num_kv_heads = 2;
  t.layout.head_dim = 4;
  t.layout.dtype = DType::kF32;
  for (uint32_t layer = 0; layer < 2; ++layer) {
    KvTraceRecord r;
    r.story = 9;
    r.layer = layer;
    r.tokens = 3;
    for (int i = 0; i < 3 * 4 * 4; ++i) r.q.push_back(i + layer), r.q_pre_rope.push_back(-i);
    for (int i = 0; i < 3 * 2 * 4; ++i) {
      r.k.push_back(i * 0.5f);
      r.k_pre_rope.push_back(i * 0.25f);
      r.v.push_back(100 - i);
    }
    t.records.push_back(r);
  }
  return t;
}

TEST(KvTrace, RoundTripAndEveryTruncationIsDetected) {
  auto env = NewMemEnv();
  ASSERT_TRUE(WriteKvTrace(env.get(), "t", Small()).ok());
  auto back = ReadKvTrace(env.get(), "t");
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->records.size(), 2u);
  EXPECT_EQ(back->records[1].q, Small().records[1].q);
  EXPECT_EQ(back->records[0].v, Small().records[0].v);
  const std::string bytes = *ReadFileToString(env.get(), "t");
  for (size_t len = 0; len < bytes.size(); len += 7) {
    EXPECT_EQ(ParseKvTrace(bytes.substr(0, len)).status().code(), absl::StatusCode::kDataLoss) << len;
  }
  std::string flipped = bytes;
  flipped[100] ^= 4;
  EXPECT_NE(ParseKvTrace(flipped).status().message().find("checksum"), absl::string_view::npos);
}

TEST(KvTrace, WriterRejectsMismatchedRecords) {
  auto env = NewMemEnv();
  KvTrace t = Small();
  t.records[0].v.pop_back();
  EXPECT_EQ(WriteKvTrace(env.get(), "t", t).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvrecall
