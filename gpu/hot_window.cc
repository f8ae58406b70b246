#include "gpu/hot_window.h"

#include <algorithm>

namespace kvrecall {

void HotWindowCpu::Append(int64_t first_pos, int count, const uint16_t* k, const uint16_t* v, uint16_t* evicted_k,
                          uint16_t* evicted_v, int64_t* evicted_pos) {
  const int d = s_.head_dim, S = s_.slots();
  for (int i = 0; i < count; ++i) {
    const int64_t p = first_pos + i;
    const int64_t old = p - s_.window;  // the token this slot held, if any
    const bool evicts = p >= s_.sinks && old >= s_.sinks;
    evicted_pos[i] = evicts ? old : -1;
    const int64_t slot = s_.Slot(p);
    for (int h = 0; h < s_.heads; ++h) {
      uint16_t* wk = k_.data() + (size_t(h) * S + slot) * d;
      uint16_t* wv = v_.data() + (size_t(h) * S + slot) * d;
      if (evicts) {
        std::copy(wk, wk + d, evicted_k + (size_t(h) * count + i) * d);
        std::copy(wv, wv + d, evicted_v + (size_t(h) * count + i) * d);
      }
      std::copy(k + (size_t(h) * count + i) * d, k + (size_t(h) * count + i + 1) * d, wk);
      std::copy(v + (size_t(h) * count + i) * d, v + (size_t(h) * count + i + 1) * d, wv);
    }
  }
}

}  // namespace kvrecall
