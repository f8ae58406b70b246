// The GPU hot window: per (layer, KV head), a ring of f16 K/V slots holding
// the first `sinks` tokens for good and the most recent `window` tokens.
// Appending a batch of tokens past the window evicts, for each, the oldest
// non-sink token: its K/V rows are copied out (to a staging buffer the
// offload path — codec + client — takes) before the slot is reused.
//
// Slot of position p: p < sinks ? p : sinks + (p - sinks) % window.
//
// HotWindowCpu is the reference (and the CPU path); the CUDA launcher
// applies the same batch to device buffers.
#ifndef KVRECALL_GPU_HOT_WINDOW_H_
#define KVRECALL_GPU_HOT_WINDOW_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#ifdef __CUDACC__
#define KVR_HOST_DEVICE __host__ __device__
#else
#define KVR_HOST_DEVICE
#endif

namespace kvrecall {

struct HotWindowShape {
  int heads = 1;     // layers x KV heads
  int head_dim = 0;
  int sinks = 4, window = 64;
  KVR_HOST_DEVICE int slots() const { return sinks + window; }
  KVR_HOST_DEVICE int64_t Slot(int64_t p) const { return p < sinks ? p : sinks + (p - sinks) % window; }
};

// K and V: [heads][slots][head_dim] f16 bits. Append(first_pos, count, k, v)
// with k, v [heads][count][head_dim]; evicted rows (if any) go to
// evicted_k/v [heads][count][head_dim] with their positions in
// evicted_pos[count] (-1 where nothing was evicted). REQUIRES: count <=
// window, tokens appended in order.
class HotWindowCpu {
 public:
  explicit HotWindowCpu(const HotWindowShape& s)
      : s_(s), k_(size_t(s.heads) * s.slots() * s.head_dim), v_(k_.size()) {}
  void Append(int64_t first_pos, int count, const uint16_t* k, const uint16_t* v, uint16_t* evicted_k,
              uint16_t* evicted_v, int64_t* evicted_pos);
  const std::vector<uint16_t>& k() const { return k_; }
  const std::vector<uint16_t>& v() const { return v_; }

 private:
  HotWindowShape s_;
  std::vector<uint16_t> k_, v_;
};

// Device version of HotWindowCpu::Append (all pointers device memory,
// evicted_pos may be null). Returns a cudaError_t as int.
int LaunchHotWindowAppend(const HotWindowShape& shape, int64_t first_pos, int count, const uint16_t* k,
                          const uint16_t* v, uint16_t* window_k, uint16_t* window_v, uint16_t* evicted_k,
                          uint16_t* evicted_v, void* stream);

}  // namespace kvrecall

#endif  // KVRECALL_GPU_HOT_WINDOW_H_
