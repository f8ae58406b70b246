// Test helper for the GPU kernel tests: a real stories260K KV trace (all
// layers of one story, engine/eval.h TraceStories) and per-head slices of
// it. Skips the test, saying where it looked, when ../shared is absent.
#ifndef KVRECALL_GPU_STORIES_TRACE_H_
#define KVRECALL_GPU_STORIES_TRACE_H_

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "codec/kv_trace.h"
#include "engine/eval.h"
#include "engine/test_data.h"

namespace kvrecall {

// Traces story `story` of the held-out set (at most max_tokens tokens).
inline bool LoadStoriesTrace(int story, int max_tokens, KvTrace* out, std::string* why) {
  RealModel rm;
  if (!LoadRealModel(&rm, why)) return false;
  auto all = LoadStories(Env::Default(), rm.dir + "/tinystories_valid_first1000.txt");
  EXPECT_TRUE(all.ok()) << all.status();
  if (!all.ok()) return false;
  auto t = TraceStories(*rm.model, *rm.tok, *all, {story}, {}, max_tokens);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return false;
  *out = std::move(*t);
  return true;
}

#define KVR_REQUIRE_STORIES_TRACE(trace, story, max_tokens)     \
  KvTrace trace;                                                \
  do {                                                          \
    std::string why_;                                           \
    if (!LoadStoriesTrace(story, max_tokens, &trace, &why_)) {  \
      if (!why_.empty()) GTEST_SKIP() << why_;                  \
      return;                                                   \
    }                                                           \
  } while (0)

// Head h of a [tokens][heads][d] tensor as [tokens][d].
inline std::vector<float> HeadRows(const std::vector<float>& x, int tokens, int heads, int d, int h) {
  std::vector<float> out(size_t(tokens) * d);
  for (int t = 0; t < tokens; ++t)
    std::copy_n(x.begin() + (size_t(t) * heads + h) * d, d, out.begin() + size_t(t) * d);
  return out;
}

}  // namespace kvrecall

#endif  // KVRECALL_GPU_STORIES_TRACE_H_
