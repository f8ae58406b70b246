#include "engine/prefix_kv.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "codec/block_key.h"
#include "codec/container.h"
#include "codec/rope.h"
#include "common/status.h"

namespace kvrecall {
namespace {

double Ms(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrefixKv>> PrefixKv::Create(const Model* model, KvClient* client,
                                                           const std::string& codec_spec, int block_tokens) {
  if (block_tokens < 1 || block_tokens > 4096) return absl::InvalidArgumentError("block_tokens must be in [1, 4096]");
  ASSIGN_OR_RETURN(std::unique_ptr<KvCodec> codec, MakeCodec(codec_spec));
  if (codec->id() == CodecId::kSquat || codec->id() == CodecId::kCommVq || StreamingParamsOf(*codec).pre_rope) {
    return absl::InvalidArgumentError(absl::StrCat("prefix blocks need a stateless post-RoPE codec, not ", codec_spec));
  }
  return std::unique_ptr<PrefixKv>(new PrefixKv(model, client, std::move(codec), block_tokens));
}

PrefixKv::PrefixKv(const Model* m, KvClient* c, std::unique_ptr<KvCodec> codec, int block_tokens)
    : model_(m), client_(c), codec_(std::move(codec)), block_tokens_(block_tokens), layout_(m->kv_layout()) {
  layout_.dtype = DType::kF32;
  layout_.keys_pre_rope = false;
  fingerprint_ = ModelFingerprint(m->id(), layout_, static_cast<uint16_t>(codec_->id()), codec_->params(), 0);
}

absl::StatusOr<std::vector<float>> PrefixKv::Prefill(const std::vector<int>& tokens, KvCache* cache, Transformer* tf,
                                                     PrefillStats* st) {
  *st = PrefillStats();
  const int n = static_cast<int>(tokens.size());
  if (n < 1 || n > model_->config().seq_len) return absl::InvalidArgumentError("prompt length out of range");
  const int L = layout_.num_layers, H = layout_.num_kv_heads, d = layout_.head_dim, B = block_tokens_;
  const size_t per_block = size_t(L) * H * B * d;
  RETURN_IF_ERROR(cache->Begin(model_->kv_layout()));
  const std::vector<int32_t> ids(tokens.begin(), tokens.end());
  const std::vector<BlockKey> keys = ChainBlockKeys(fingerprint_, client_->namespace_salt(), ids, B);
  st->tokens = n;

  // 1. The longest cached prefix, leaving at least the last token to compute.
  auto t0 = std::chrono::steady_clock::now();
  const int usable = std::min<int>(static_cast<int>(keys.size()), (n - 1) / B);
  int have = 0;
  if (usable > 0) {
    absl::StatusOr<int> p = client_->LookupPrefix(std::vector<BlockKey>(keys.begin(), keys.begin() + usable)).get();
    if (p.ok()) have = *p;
  }
  st->lookup_ms = Ms(t0);

  // 2. Load those blocks and feed their K/V to the cache.
  t0 = std::chrono::steady_clock::now();
  int loaded = 0;
  if (have > 0) {
    std::vector<std::string> bufs(have);
    std::vector<absl::Span<uint8_t>> dst;
    const size_t cap = per_block * 2 * sizeof(float) + (64 << 10);
    for (auto& b : bufs) b.resize(cap), dst.push_back({reinterpret_cast<uint8_t*>(b.data()), b.size()});
    std::vector<absl::StatusOr<size_t>> got =
        client_->Load(std::vector<BlockKey>(keys.begin(), keys.begin() + have), dst).get();
    std::vector<float> k(per_block), v(per_block), kpre(d);
    for (int b = 0; b < have; ++b) {
      if (!got[b].ok()) break;  // a miss ends the prefix: compute from here
      absl::StatusOr<BlockView> view = ParseBlock(dst[b].subspan(0, *got[b]));
      if (!view.ok() || view->header.token_count != uint32_t(B) || view->header.first_token != uint64_t(b) * B ||
          view->header.fingerprint != fingerprint_ || !codec_->Decode(*view, k.data(), v.data()).ok()) {
        break;  // not the block we asked for: treat as a miss
      }
      for (int t = 0; t < B; ++t) {
        const int pos = b * B + t;
        for (int l = 0; l < L; ++l) {
          std::vector<float> kt(size_t(H) * d), vt(size_t(H) * d), kp(size_t(H) * d);
          for (int h = 0; h < H; ++h) {
            const size_t row = ((size_t(l) * H + h) * B + t) * d;
            std::copy_n(k.data() + row, d, kt.data() + size_t(h) * d);
            std::copy_n(v.data() + row, d, vt.data() + size_t(h) * d);
            std::copy_n(k.data() + row, d, kp.data() + size_t(h) * d);
            UnapplyRope(kp.data() + size_t(h) * d, layout_, pos);
          }
          KvTokenView view_t{pos, kp.data(), kt.data(), vt.data()};
          RETURN_IF_ERROR(cache->Append(l, view_t));
        }
      }
      ++loaded;
    }
  }
  st->loaded_tokens = loaded * B;
  st->load_ms = Ms(t0);

  // 3. Compute the rest, capturing K/V of the blocks to save.
  t0 = std::chrono::steady_clock::now();
  const int full_blocks = static_cast<int>(keys.size());
  std::vector<std::vector<float>> kb(full_blocks), vb(full_blocks);  // [L][H][B][d] per new block
  tf->set_hook([&](const LayerActivations& a) {
    const int b = a.position / B;
    if (b < loaded || b >= full_blocks) return;
    if (kb[b].empty()) kb[b].assign(per_block, 0.0f), vb[b].assign(per_block, 0.0f);
    const int t = a.position % B;
    for (int h = 0; h < H; ++h) {
      const size_t row = ((size_t(a.layer) * H + h) * B + t) * d;
      std::copy_n(a.k + size_t(h) * d, d, kb[b].data() + row);
      std::copy_n(a.v + size_t(h) * d, d, vb[b].data() + row);
    }
  });
  absl::Span<const float> logits;
  for (int pos = loaded * B; pos < n; ++pos) {
    absl::StatusOr<absl::Span<const float>> out = tf->Forward(tokens[pos], pos, cache);
    if (!out.ok()) {
      tf->set_hook(nullptr);
      return out.status();
    }
    logits = *out;
  }
  tf->set_hook(nullptr);
  st->computed_tokens = n - loaded * B;
  std::vector<float> result(logits.begin(), logits.end());
  st->compute_ms = Ms(t0);

  // 4. Save the new full blocks (fire and wait: the demo measures it apart).
  t0 = std::chrono::steady_clock::now();
  std::vector<BlockKey> save_keys;
  std::vector<std::string> blocks;
  for (int b = loaded; b < full_blocks; ++b) {
    if (kb[b].empty()) continue;
    KvChunkRef c;
    c.layout = layout_;
    c.layer_begin = 0;
    c.layer_count = L;
    c.first_token = uint64_t(b) * B;
    c.tokens = B;
    c.k = kb[b].data();
    c.v = vb[b].data();
    EncodeOptions eo;
    eo.fingerprint = fingerprint_;
    absl::StatusOr<std::string> blk = codec_->Encode(c, &eo);
    if (!blk.ok()) return blk.status();
    save_keys.push_back(keys[b]);
    blocks.push_back(std::move(*blk));
  }
  if (!save_keys.empty()) {
    std::vector<absl::Span<const uint8_t>> spans;
    for (const auto& b : blocks) spans.push_back(AsBytes(b));
    std::vector<absl::Status> saved = client_->Save(save_keys, spans).get();
    for (size_t i = 0; i < saved.size(); ++i) {
      if (saved[i].ok()) ++st->saved_blocks, st->saved_bytes += blocks[i].size();
    }
  }
  st->save_ms = Ms(t0);
  return result;
}

}  // namespace kvrecall
