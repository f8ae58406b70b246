// A valid block container of random K/V (standard normal, seeded), for
// tests and benchmarks that need real blocks of a given shape and size:
// [layers][kv_heads][tokens][head_dim] for K and for V. RandomF16Block: f16,
// 4·layers·kv_heads·head_dim bytes per token plus the container's header and
// trailer; RandomBlock: any codec spec.
#ifndef KVRECALL_CODEC_RANDOM_BLOCK_H_
#define KVRECALL_CODEC_RANDOM_BLOCK_H_

#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"

namespace kvrecall {

// chunk_shift: chunk checksums (BlockHeader::chunk_shift), 0 for none.
// The codec spec must be valid (the caller's constant).
inline std::string RandomBlock(const std::string& codec, int layers, int kv_heads, int head_dim, int tokens,
                               uint64_t seed, int chunk_shift = 0) {
  KvChunkRef c;
  c.layout.num_layers = layers, c.layout.num_q_heads = 4 * kv_heads, c.layout.num_kv_heads = kv_heads;
  c.layout.head_dim = head_dim;
  c.layer_count = layers;
  c.tokens = tokens;
  c.first_token = seed;
  std::vector<float> k(size_t(layers) * kv_heads * tokens * head_dim), v(k.size());
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> n01;
  for (float& x : k) x = n01(rng);
  for (float& x : v) x = n01(rng);
  c.k = k.data(), c.v = v.data();
  EncodeOptions o;
  o.chunk_shift = chunk_shift;
  return *(*MakeCodec(codec))->Encode(c, &o);
}

inline std::string RandomF16Block(int layers, int kv_heads, int head_dim, int tokens, uint64_t seed,
                                  int chunk_shift = 0) {
  return RandomBlock("f16", layers, kv_heads, head_dim, tokens, seed, chunk_shift);
}

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_RANDOM_BLOCK_H_
