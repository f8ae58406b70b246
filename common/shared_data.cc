#include "common/shared_data.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvrecall {
namespace {

bool Exists(const std::string& p) { return ::access(p.c_str(), R_OK) == 0; }

absl::StatusOr<std::string> Find(const char* direct_env, const std::string& sub,
                                 const std::string& probe) {
  std::vector<std::string> candidates;
  if (const char* d = std::getenv(direct_env)) candidates.push_back(d);
  if (const char* s = std::getenv("KVRECALL_SHARED")) candidates.push_back(absl::StrCat(s, "/", sub));
  if (const char* w = std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    candidates.push_back(absl::StrCat(w, "/../shared/", sub));
  }
  char buf[PATH_MAX];
  if (::getcwd(buf, sizeof(buf)) != nullptr) {
    std::string dir = buf;
    if (char* real = ::realpath(buf, nullptr)) {
      dir = real;
      std::free(real);
    }
    while (!dir.empty()) {
      if (Exists(dir + "/WORKSPACE")) candidates.push_back(absl::StrCat(dir, "/../shared/", sub));
      const size_t slash = dir.rfind('/');
      if (slash == std::string::npos || slash == 0) break;
      dir.resize(slash);
    }
  }
  for (const std::string& c : candidates) {
    if (Exists(c + "/" + probe)) return c;
  }
  return absl::NotFoundError(absl::StrCat("no ", probe, " found; looked in: ",
                                          candidates.empty() ? "(nowhere)" : absl::StrJoin(candidates, ", "),
                                          ". Set ", direct_env, " or KVRECALL_SHARED."));
}

}  // namespace

absl::StatusOr<std::string> FindDataDir(const std::string& probe_file) {
  return Find("KVRECALL_DATA", "data", probe_file);
}

absl::StatusOr<std::string> FindFixturesDir(const std::string& probe_file) {
  return Find("KVRECALL_FIXTURES", "fixtures", probe_file);
}

absl::StatusOr<SquatQkSample> LoadSquatQkSample() {
  absl::StatusOr<std::string> dir = FindFixturesDir();
  if (!dir.ok()) return dir.status();
  SquatQkSample s;
  const size_t n = size_t(SquatQkSample::kTokens) * SquatQkSample::kDim;
  for (auto [name, out] : {std::pair<const char*, std::vector<float>*>{"q_32x128.f32", &s.q}, {"k_32x128.f32", &s.k}}) {
    const std::string path = absl::StrCat(*dir, "/squat_qk/", name);
    std::ifstream in(path, std::ios::binary);
    out->resize(n);
    in.read(reinterpret_cast<char*>(out->data()), static_cast<std::streamsize>(n * 4));
    if (in.gcount() != static_cast<std::streamsize>(n * 4)) {
      return absl::DataLossError(absl::StrCat(path, ": expected ", n * 4, " bytes, read ", in.gcount()));
    }
  }
  return s;
}

}  // namespace kvrecall
