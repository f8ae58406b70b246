// Group-quantized (KIVI / QWC / SQuat sections, codec/group_quant.h) token
// rows dequantized on the GPU into f16 attention buffers: selected rows of a
// whole chunk, or all of it (rows = 0..tokens-1). Launchers take device
// pointers and a cudaStream_t (as void*), return a cudaError_t as int.
#ifndef KVRECALL_GPU_DEQUANT_KERNELS_H_
#define KVRECALL_GPU_DEQUANT_KERNELS_H_

#include <cstdint>

namespace kvrecall {

struct DequantRowsArgs {
  int heads = 0, tokens = 0, dim = 0;  // the tensor [heads][tokens][dim]
  int bits = 2, group = 32;
  bool per_channel = true;           // keys: per channel over token groups; values: per token over channel groups
  const uint8_t* codes = nullptr;    // packed LSB-first, element i at bit i*bits
  const uint16_t* scales = nullptr;  // f16 (m, delta) pairs, layout of codec/group_quant.h
  const int32_t* rows = nullptr;     // [num_rows] token indices (< tokens)
  int num_rows = 0;
  uint16_t* out = nullptr;           // f16 [heads][num_rows][dim]
};

int LaunchDequantizeRows(const DequantRowsArgs& args, void* stream);

// GEAR (codec/gear.cc): the group dequantization plus the low-rank and
// sparse corrections, fused so that each element is rounded to f16 once:
// x[t][c] = m + delta*code + sum_j U[t][j]*V[c][j], then the row's outliers
// overwrite their cells. Section bytes are read unaligned (sections sit at
// any offset of a block).
struct GearRowsArgs {
  DequantRowsArgs base;
  int rank = 0;                         // <= kGearMaxRank
  const uint8_t* lowrank = nullptr;     // the low-rank section after its u16 rank: per head U [tokens][rank]
                                        // then V [dim][rank], f16
  const uint8_t* outliers = nullptr;    // the outlier section: per head u32 count, u32 cells (sorted), f16 values
  const uint64_t* outlier_heads = nullptr;  // [heads] byte offset of each head's count (GearOutlierHeadOffsets)
};

inline constexpr int kGearMaxRank = 64;
inline constexpr int kGearMaxDim = 4096;

int LaunchGearDequantizeRows(const GearRowsArgs& args, void* stream);

// Host-side plan for the outlier section of `heads` tensors of `cells`
// elements each: the byte offset of each head's count. Returns false when
// the section is malformed (the CPU codec's ParseParts gives the reason).
bool GearOutlierHeadOffsets(const uint8_t* section, uint64_t size, int heads, uint64_t cells, uint64_t* offsets);

}  // namespace kvrecall

#endif  // KVRECALL_GPU_DEQUANT_KERNELS_H_
