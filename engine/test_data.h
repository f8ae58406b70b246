// Test helper: loads the real stories260K model and tokenizer from
// ../shared/data (common/shared_data.h), or skips the test saying where it
// looked.
#ifndef KVRECALL_ENGINE_TEST_DATA_H_
#define KVRECALL_ENGINE_TEST_DATA_H_

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "common/shared_data.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace kvrecall {

struct RealModel {
  std::string dir;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
};

// Fills `out`; returns false (after GTEST_SKIP-worthy message in `why`) when
// the data is absent. Load errors of present data fail the test.
inline bool LoadRealModel(RealModel* out, std::string* why) {
  absl::StatusOr<std::string> dir = FindDataDir();
  if (!dir.ok()) {
    *why = "real data absent, skipping: " + std::string(dir.status().message());
    return false;
  }
  out->dir = *dir;
  auto m = Model::Load(Env::Default(), *dir + "/stories260K.bin");
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return false;
  out->model = std::move(*m);
  auto t = Tokenizer::Load(Env::Default(), *dir + "/tok512.bin", out->model->config().vocab_size);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return false;
  out->tok = std::move(*t);
  return true;
}

#define KVR_REQUIRE_REAL_MODEL(rm)              \
  RealModel rm;                                 \
  do {                                          \
    std::string why_;                           \
    if (!LoadRealModel(&rm, &why_)) {           \
      if (!why_.empty()) GTEST_SKIP() << why_;  \
      return;                                   \
    }                                           \
  } while (0)

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_TEST_DATA_H_
