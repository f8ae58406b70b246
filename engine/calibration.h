// Retrieval-index calibration samples from a KV trace: for every (layer, KV
// head), its keys (pre- and post-RoPE) and its query heads' queries over the
// traced stories, as TrainingData views into buffers this object owns.
#ifndef KVRECALL_ENGINE_CALIBRATION_H_
#define KVRECALL_ENGINE_CALIBRATION_H_

#include <vector>

#include "codec/kv_trace.h"
#include "index/retrieval_index.h"

namespace kvrecall {

class CalibrationSet {
 public:
  CalibrationSet(const KvTrace& trace, const KvLayout& layout);
  CalibrationSet(const CalibrationSet&) = delete;
  CalibrationSet& operator=(const CalibrationSet&) = delete;
  // [layer × kv_heads], layer-major; valid while this object lives.
  const std::vector<TrainingData>& samples() const { return samples_; }

 private:
  std::vector<std::vector<float>> kp_, kq_, qp_, qq_;
  std::vector<TrainingData> samples_;
};

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_CALIBRATION_H_
