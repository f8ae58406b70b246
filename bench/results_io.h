// Writing benchmark results: a markdown table fragment (the wrapper script
// adds machine, command and date) and a CSV for the plot; and the timing
// helpers the benchmarks share.
#ifndef KVRECALL_BENCH_RESULTS_IO_H_
#define KVRECALL_BENCH_RESULTS_IO_H_

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace kvrecall {

// Writes <dir>/<stem>.md.part and <dir>/<stem>.csv. A relative `dir` is
// taken from the workspace root under `bazel run`. Returns false on failure.
inline bool WriteResults(std::string dir, const std::string& stem, const std::string& md, const std::string& csv) {
  if (dir.empty()) return true;
  if (dir[0] != '/') {
    if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) dir = std::string(ws) + "/" + dir;
  }
  std::ofstream m(dir + "/" + stem + ".md.part"), c(dir + "/" + stem + ".csv");
  m << md;
  c << csv;
  return m.good() && c.good();
}

// Milliseconds since t.
inline double MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// Median (mean of the middle two for an even count; 0 for none).
inline double Median(std::vector<double> x) {
  if (x.empty()) return 0.0;
  std::sort(x.begin(), x.end());
  return x.size() % 2 ? x[x.size() / 2] : 0.5 * (x[x.size() / 2 - 1] + x[x.size() / 2]);
}

}  // namespace kvrecall

#endif  // KVRECALL_BENCH_RESULTS_IO_H_
