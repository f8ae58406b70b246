// KvCache: the one interface through which the engine writes and reads K/V.
// The model code never touches K/V storage: it appends each token's K/V and
// asks the cache for the attention output. Exact, compressed, offloaded and
// retrieval caches all implement this, so any of them can run the real model.
//
// Thread safety: a cache serves one sequence of one engine thread.
#ifndef KVRECALL_ENGINE_KV_CACHE_H_
#define KVRECALL_ENGINE_KV_CACHE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/kv_layout.h"

namespace kvrecall {

// One token's K/V for one layer, as the model produced it.
struct KvTokenView {
  int position = 0;
  const float* k_pre_rope = nullptr;  // [kv_heads][head_dim]
  const float* k = nullptr;           // post-RoPE, [kv_heads][head_dim]
  const float* v = nullptr;           // [kv_heads][head_dim]
};

class KvCache {
 public:
  virtual ~KvCache() = default;
  virtual std::string name() const = 0;
  // Starts a new sequence (drops the previous one).
  virtual absl::Status Begin(const KvLayout& layout) = 0;
  // Stores token t.position of `layer`. REQUIRES: positions arrive in order
  // 0, 1, 2, ... for each layer.
  virtual absl::Status Append(int layer, const KvTokenView& t) = 0;
  // For every query head h: out[h] = attention of q[h] (post-RoPE,
  // [q_heads][head_dim]; q_pre_rope the same before RoPE) over the cached
  // tokens 0..pos of `layer` (the cache decides which and how exactly).
  virtual absl::Status Attend(int layer, int pos, const float* q, const float* q_pre_rope,
                              float* out) = 0;
  // Bytes held per cached token, over all layers, K and V, metadata included.
  virtual double BytesPerToken() const = 0;
};

// Full-precision f32 cache: exact attention; the reference.
std::unique_ptr<KvCache> NewExactKvCache();


}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_KV_CACHE_H_
