// Two GPU helpers of the retrieval path (launchers return cudaError_t as int):
//
// Gather: selected rows from pinned, device-mapped host staging memory
// (cudaHostAlloc(..., cudaHostAllocMapped), pointer from
// cudaHostGetDevicePointer) into a device buffer, in one batched launch on
// the caller's stream (copies on one stream overlap compute on another).
//
// CommVQ scoring straight from codes (codec/commvq.h): per token, the
// stages' table rows are summed per RoPE pair and rotated once by the
// token's position, times its norm and 1/sqrt(d). The table is
// CommVqKeyCodebook::QueryTable's ([stages][entries][4][pairs]).
#ifndef KVRECALL_GPU_GATHER_COMMVQ_KERNELS_H_
#define KVRECALL_GPU_GATHER_COMMVQ_KERNELS_H_

#include <cstdint>

namespace kvrecall {

// dst[i] = src_mapped[rows[i]] for i < n, rows of row_elems u16 each.
int LaunchGatherRows(const uint16_t* src_mapped, const int32_t* rows, int n, int row_elems, uint16_t* dst,
                     void* stream);

struct CommVqScoreArgs {
  const float* table = nullptr;     // [stages][entries][4][pairs]
  const uint16_t* codes = nullptr;  // [n][stages], (A << digit_bits) | B
  const float* norms = nullptr;     // [n]
  const float* inv_freq = nullptr;  // [pairs] RoPE inverse frequencies
  int64_t n = 0;
  int stages = 0, digit_bits = 0, pairs = 0;
  float rope_scaling = 1.0f;
  bool rotate = true;               // false: RoPE style none
  float inv_sqrt_d = 1.0f;
  float* scores = nullptr;          // [n]
};

int LaunchCommVqScore(const CommVqScoreArgs& args, void* stream);

}  // namespace kvrecall

#endif  // KVRECALL_GPU_GATHER_COMMVQ_KERNELS_H_
