// KIVI and "Quantize What Counts" (QWC): group-wise asymmetric quantization,
// keys per channel over token groups, values per token over channel groups
// (algorithms.md §2, §6).
//
//   kivi:bits=2,kgroup=32,vgroup=32,residual=32
//   qwc:kbits=4,vbits=2,kgroup=64,vgroup=64,residual=64,pre_rope=0
//
// `residual` is the full-precision window the streaming cache keeps (tokens);
// `pre_rope=1` asks the cache to quantize keys before RoPE. Sections:
// K scales, K codes, V scales, V codes (codec/group_quant.h).
#ifndef KVRECALL_CODEC_KIVI_H_
#define KVRECALL_CODEC_KIVI_H_

#include <vector>

#include "codec/codec.h"
#include "codec/group_quant.h"

namespace kvrecall {

// QWC's norm-aware allocator (algorithms.md §2): error model c_i·2^(−2b_i)
// with sensitivities c_i = ‖W_i‖²; every tensor starts at the lowest level of
// `menu`, then the tensor with the largest error drop per added bit gets its
// next level while the mean stays within `budget` bits. Returns one bit
// width per sensitivity.
std::vector<int> AllocateBits(const std::vector<double>& sensitivities, const std::vector<int>& menu,
                              double budget);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_KIVI_H_
