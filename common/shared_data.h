// Where the real data lives: the stories260K model, tokenizer and text
// (`data/`) and the squat_qk fixture (`fixtures/`), kept outside the
// repository in ../shared.
//
// Search order for the data directory:
//   $KVRECALL_DATA; $KVRECALL_SHARED/data; $BUILD_WORKSPACE_DIRECTORY/../shared/data
//   (set by `bazel run`); then ../shared/data beside every ancestor of the
//   current directory that holds a WORKSPACE file.
// The fixtures directory likewise ($KVRECALL_FIXTURES, $KVRECALL_SHARED/fixtures, ...).
#ifndef KVRECALL_COMMON_SHARED_DATA_H_
#define KVRECALL_COMMON_SHARED_DATA_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvrecall {

// NOT_FOUND naming every place it looked when none holds `probe_file`.
absl::StatusOr<std::string> FindDataDir(const std::string& probe_file = "stories260K.bin");
absl::StatusOr<std::string> FindFixturesDir(const std::string& probe_file = "squat_qk/q_32x128.f32");

// The squat_qk fixture: one real head's queries and keys, [32][128] f32 each
// (little-endian, as stored). NOT_FOUND (with where it looked) if absent,
// DATA_LOSS if a file is short.
struct SquatQkSample {
  static constexpr int kTokens = 32;
  static constexpr int kDim = 128;
  std::vector<float> q, k;
};
absl::StatusOr<SquatQkSample> LoadSquatQkSample();

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_SHARED_DATA_H_
