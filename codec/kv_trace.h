// KV traces: Q, K and V of a real model's layers, written by
// `engine:llm trace` and read by the quality benchmarks (doc/formats.md,
// "KV trace v1"). One record per (story, layer), row-major f32:
//   q, q_pre_rope  [tokens][q_heads][head_dim]
//   k_pre_rope, k  [tokens][kv_heads][head_dim]   (k is post-RoPE)
//   v              [tokens][kv_heads][head_dim]
#ifndef KVRECALL_CODEC_KV_TRACE_H_
#define KVRECALL_CODEC_KV_TRACE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/kv_layout.h"
#include "common/env.h"

namespace kvrecall {

struct KvTraceRecord {
  uint32_t story = 0;
  uint32_t layer = 0;
  uint32_t tokens = 0;
  std::vector<float> q, q_pre_rope, k_pre_rope, k, v;
};

struct KvTrace {
  KvLayout layout;  // dtype is f32
  std::vector<KvTraceRecord> records;
};

// INVALID_ARGUMENT if a record's tensors do not match the layout.
absl::Status WriteKvTrace(Env* env, const std::string& path, const KvTrace& trace);
// DATA_LOSS on truncation, bad magic, size mismatch or checksum mismatch;
// UNIMPLEMENTED for an unknown version.
absl::StatusOr<KvTrace> ReadKvTrace(Env* env, const std::string& path);
absl::StatusOr<KvTrace> ParseKvTrace(const std::string& bytes);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_KV_TRACE_H_
