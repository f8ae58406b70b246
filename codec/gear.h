// GEAR: quantized backbone + low-rank residual + sparse outliers
// (algorithms.md §3). Per (layer, KV head) and per K and V, a chunk X (n×d):
//   S: the fraction `outliers` of X's entries, half largest and half
//      smallest, stored exactly (u32 index + f16 value) and replaced by
//      their channel mean (K) or token mean (V) before quantizing
//      (the paper's "s of all entries", not the reference code's per-channel
//      count);
//   D̂: KIVI-style backbone, K per channel over `kgroup` tokens, V per token
//      over `vgroup` channels, `bits` bits;
//   L: rank-r approximation of X − D̂ (outliers excluded) by `loops` rounds
//      of power iteration with orthonormalization; r = `rank` for prefill
//      chunks, `rank_decode` for decode chunks; factors stored as f16.
// X̂ = D̂ + L, with outlier positions overwritten by S.
//   gear:bits=2,kgroup=64,vgroup=64,rank=4,rank_decode=2,outliers=0.02,buffer=64,loops=3
//   gear_l: the same without S (sparse=0).
// Sections: per K then V: scales, codes, low-rank (u16 rank, U [n][r], V [d][r]), outliers.
#ifndef KVRECALL_CODEC_GEAR_H_
#define KVRECALL_CODEC_GEAR_H_

#include "codec/codec.h"

#endif  // KVRECALL_CODEC_GEAR_H_
