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

}  // namespace kvrecall

#endif  // KVRECALL_GPU_DEQUANT_KERNELS_H_
