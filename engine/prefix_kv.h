// PrefixKv: prefix sharing for the reference engine through a KvClient, the
// way a serving engine uses kvrecall. A prompt's KV is saved in blocks of
// `block_tokens` tokens (every layer's post-RoPE K and V, encoded by a codec
// into a block container) under chained BlockKeys (model fingerprint with
// the codec, namespace salt, token ids). For a new prompt, the longest
// cached prefix of full blocks is loaded into the KV cache instead of being
// recomputed; the rest is computed and its new full blocks are saved.
//
// With f32 blocks the logits equal those of a cold run exactly; with f16
// they differ by f16 rounding of the loaded K/V (measured by the demo).
// Thread safety: one PrefixKv per engine thread (the client is shared).
#ifndef KVRECALL_ENGINE_PREFIX_KV_H_
#define KVRECALL_ENGINE_PREFIX_KV_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/kv_client.h"
#include "codec/codec.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/transformer.h"

namespace kvrecall {

struct PrefillStats {
  int tokens = 0;
  int loaded_tokens = 0;     // taken from the store
  int computed_tokens = 0;   // run through the model
  int saved_blocks = 0;
  int64_t saved_bytes = 0;
  double lookup_ms = 0, load_ms = 0, compute_ms = 0, save_ms = 0;
};

class PrefixKv {
 public:
  // codec_spec: any codec of codec/codec.h that needs no per-sequence state
  // (f32, f16, bf16, kivi, qwc, ...).
  static absl::StatusOr<std::unique_ptr<PrefixKv>> Create(const Model* model, KvClient* client,
                                                          const std::string& codec_spec, int block_tokens);

  // Begins `cache` and fills it with `tokens` (loaded prefix + computed
  // rest); returns the logits after the last token. REQUIRES: tokens not
  // empty and shorter than the model's context.
  absl::StatusOr<std::vector<float>> Prefill(const std::vector<int>& tokens, KvCache* cache, Transformer* tf,
                                             PrefillStats* stats);

  const Hash128& fingerprint() const { return fingerprint_; }

 private:
  PrefixKv(const Model* m, KvClient* c, std::unique_ptr<KvCodec> codec, int block_tokens);
  const Model* model_;
  KvClient* client_;
  std::unique_ptr<KvCodec> codec_;
  int block_tokens_;
  KvLayout layout_;
  Hash128 fingerprint_;
};

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_PREFIX_KV_H_
