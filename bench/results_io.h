// Writing benchmark results: a markdown table fragment (the wrapper script
// adds machine, command and date) and a CSV for the plot.
#ifndef KVRECALL_BENCH_RESULTS_IO_H_
#define KVRECALL_BENCH_RESULTS_IO_H_

#include <cstdlib>
#include <fstream>
#include <string>

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

}  // namespace kvrecall

#endif  // KVRECALL_BENCH_RESULTS_IO_H_
