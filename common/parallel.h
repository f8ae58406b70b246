// ParallelFor: splits [0, n) into contiguous ranges run on up to `threads`
// threads (the caller's thread runs the first range). threads <= 0 means
// the hardware concurrency. Ranges are at least `min_per_thread` long, so
// small inputs stay on one thread. No pool: each call starts its threads,
// which costs tens of microseconds; use it for work of a millisecond or more.
#ifndef KVRECALL_COMMON_PARALLEL_H_
#define KVRECALL_COMMON_PARALLEL_H_

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace kvrecall {

inline int HardwareThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// fn(begin, end, worker) with worker in [0, workers); returns the number of
// workers used (for per-worker accumulators, size them with MaxWorkers).
template <typename Fn>
int ParallelFor(int64_t n, int threads, int64_t min_per_thread, Fn&& fn) {
  if (threads <= 0) threads = HardwareThreads();
  const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_thread));
  const int workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, by_size)));
  if (workers == 1) {
    if (n > 0) fn(int64_t{0}, n, 0);
    return 1;
  }
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  const int64_t step = (n + workers - 1) / workers;
  for (int w = 1; w < workers; ++w) {
    const int64_t b = std::min(n, w * step), e = std::min(n, (w + 1) * step);
    pool.emplace_back([&fn, b, e, w] { fn(b, e, w); });
  }
  fn(int64_t{0}, std::min(n, step), 0);
  for (auto& t : pool) t.join();
  return workers;
}

inline int MaxWorkers(int threads) { return threads <= 0 ? HardwareThreads() : threads; }

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_PARALLEL_H_
