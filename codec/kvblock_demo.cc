// Builds a block container from a generated KV tensor (the stories260K
// layout), verifies it, corrupts a copy, and prints what happened.
//   bazel run //codec:kvblock_demo -- [tokens] [seed]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "codec/block_key.h"
#include "codec/container.h"
#include "codec/half.h"
#include "codec/kv_layout.h"

using namespace kvrecall;

int main(int argc, char** argv) {
  const int tokens = argc > 1 ? std::atoi(argv[1]) : 64;
  const unsigned seed = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 1;
  if (tokens <= 0 || tokens > 1 << 20) {
    std::fprintf(stderr, "tokens must be in [1, 1048576]\n");
    return 2;
  }
  KvLayout layout;
  layout.num_layers = 5;
  layout.num_q_heads = 8;
  layout.num_kv_heads = 4;
  layout.head_dim = 8;
  layout.dtype = DType::kF16;
  layout.rope_style = RopeStyle::kInterleaved;
  const Hash128 fp = ModelFingerprint("stories260K", layout, /*codec_id=*/1, "f16", 0);

  // [layers][kv_heads][tokens][head_dim] for K and V, as f16.
  const size_t per = static_cast<size_t>(layout.num_layers) * layout.num_kv_heads * tokens * layout.head_dim;
  std::vector<uint16_t> k(per), v(per);
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01;
  for (size_t i = 0; i < per; ++i) {
    k[i] = FloatToHalf(4.0f * n01(rng) + ((i % 8) == 5 ? 6.0f : 0.0f));  // an outlier channel
    v[i] = FloatToHalf(0.5f * n01(rng));
  }
  BlockHeader h;
  h.codec_id = 1;
  h.layout = layout;
  h.layer_begin = 0;
  h.layer_count = layout.num_layers;
  h.token_count = tokens;
  h.fingerprint = fp;
  auto bytes_of = [](const std::vector<uint16_t>& x) {
    return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(x.data()), x.size() * 2);
  };
  absl::StatusOr<std::string> block = BuildBlock(h, {bytes_of(k), bytes_of(v)});
  if (!block.ok()) {
    std::fprintf(stderr, "build failed: %s\n", block.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<BlockView> view = ParseBlock(AsBytes(*block));
  if (!view.ok()) {
    std::fprintf(stderr, "verify failed: %s\n", view.status().ToString().c_str());
    return 1;
  }
  std::vector<int32_t> ids(tokens);
  for (int i = 0; i < tokens; ++i) ids[i] = (i * 37 + 11) % 512;
  const std::vector<BlockKey> keys = ChainBlockKeys(fp, "demo-namespace", ids, 16);

  std::printf("layout       %s\n", view->header.layout.DebugString().c_str());
  std::printf("fingerprint  %s\n", fp.ToHex().c_str());
  std::printf("block        %d tokens, %zu bytes (%zu header+trailer, %zu K, %zu V), %.1f B/token\n",
              tokens, block->size(), block->size() - view->sections[0].size() - view->sections[1].size(),
              view->sections[0].size(), view->sections[1].size(),
              static_cast<double>(block->size()) / tokens);
  std::printf("checksum     %016llx (XXH3-64), verified\n",
              static_cast<unsigned long long>(view->checksum));
  if (!keys.empty()) {
    std::printf("block keys   %zu x 16-token blocks, first %s, last %s\n", keys.size(),
                keys.front().ToHex().c_str(), keys.back().ToHex().c_str());
  }
  std::string bad = *block;
  bad[bad.size() / 2] ^= 0x20;
  std::printf("corrupted    one bit flipped -> %s\n",
              ParseBlock(AsBytes(bad)).status().ToString().c_str());
  std::printf("truncated    last byte cut   -> %s\n",
              ParseBlock(AsBytes(absl::string_view(*block).substr(0, block->size() - 1)))
                  .status().ToString().c_str());
  return 0;
}
