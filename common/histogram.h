// LatencyHistogram: lock-free latency counts in power-of-two microsecond
// buckets (1 µs .. 2^(kBuckets-2) µs, then +Inf), with sum and count, for
// Stats and Prometheus. Thread-safe.
#ifndef KVRECALL_COMMON_HISTOGRAM_H_
#define KVRECALL_COMMON_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>

namespace kvrecall {

class LatencyHistogram {
 public:
  static constexpr int kBuckets = 24;  // le 1, 2, 4, ... 2^22 µs, +Inf
  static double UpperBoundUs(int bucket) { return bucket + 1 >= kBuckets ? 1e300 : double(uint64_t{1} << bucket); }

  void Record(double micros) {
    int b = 0;
    while (b + 1 < kBuckets && micros > UpperBoundUs(b)) ++b;
    counts_[b].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(static_cast<uint64_t>(micros * 1000), std::memory_order_relaxed);
  }
  struct Snapshot {
    std::array<uint64_t, kBuckets> counts{};  // per bucket, not cumulative
    uint64_t count = 0;
    double sum_us = 0;
    // The smallest bucket bound below which fraction q of samples fall.
    double QuantileUpperBoundUs(double q) const {
      uint64_t seen = 0;
      for (int b = 0; b < kBuckets; ++b) {
        seen += counts[b];
        if (count > 0 && seen >= q * count) return UpperBoundUs(b);
      }
      return 0;
    }
  };
  Snapshot Read() const {
    Snapshot s;
    for (int b = 0; b < kBuckets; ++b) s.counts[b] = counts_[b].load(std::memory_order_relaxed);
    s.count = count_.load(std::memory_order_relaxed);
    s.sum_us = sum_ns_.load(std::memory_order_relaxed) / 1000.0;
    return s;
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
  std::atomic<uint64_t> count_{0}, sum_ns_{0};
};

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_HISTOGRAM_H_
