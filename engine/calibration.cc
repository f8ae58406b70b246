#include "engine/calibration.h"

namespace kvrecall {

CalibrationSet::CalibrationSet(const KvTrace& trace, const KvLayout& layout) {
  const int L = layout.num_layers, H = layout.num_kv_heads, G = layout.group_size(), d = layout.head_dim;
  const size_t n = size_t(L) * H;
  kp_.resize(n), kq_.resize(n), qp_.resize(n), qq_.resize(n);
  for (const KvTraceRecord& r : trace.records) {
    const int l = static_cast<int>(r.layer);
    if (l >= L) continue;
    for (int h = 0; h < H; ++h) {
      const size_t i = size_t(l) * H + h;
      for (uint32_t t = 0; t < r.tokens; ++t) {
        const size_t kr = (size_t(t) * H + h) * d;
        kp_[i].insert(kp_[i].end(), r.k_pre_rope.begin() + kr, r.k_pre_rope.begin() + kr + d);
        kq_[i].insert(kq_[i].end(), r.k.begin() + kr, r.k.begin() + kr + d);
        for (int g = 0; g < G; ++g) {
          const size_t qr = (size_t(t) * layout.num_q_heads + h * G + g) * d;
          qp_[i].insert(qp_[i].end(), r.q_pre_rope.begin() + qr, r.q_pre_rope.begin() + qr + d);
          qq_[i].insert(qq_[i].end(), r.q.begin() + qr, r.q.begin() + qr + d);
        }
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    TrainingData td;
    td.dim = d;
    td.k_pre = kp_[i].data(), td.k_post = kq_[i].data(), td.num_keys = static_cast<int64_t>(kp_[i].size() / d);
    td.q_pre = qp_[i].data(), td.q_post = qq_[i].data(), td.num_queries = static_cast<int64_t>(qp_[i].size() / d);
    samples_.push_back(td);
  }
}

}  // namespace kvrecall
