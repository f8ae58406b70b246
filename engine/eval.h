// What the engine does end to end: generate text, score perplexity with the
// data README's protocol, and record KV traces. Each takes the KV cache to
// run with, so every codec and retrieval method is judged the same way.
#ifndef KVRECALL_ENGINE_EVAL_H_
#define KVRECALL_ENGINE_EVAL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/kv_trace.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace kvrecall {

// Splits on "<|endoftext|>", strips surrounding whitespace, drops empties.
std::vector<std::string> SplitStories(absl::string_view text);
absl::StatusOr<std::vector<std::string>> LoadStories(Env* env, const std::string& path);

// [BOS] + Encode(story), truncated to `max_tokens`.
std::vector<int> StoryTokens(const Tokenizer& tok, const std::string& story, int max_tokens);

struct PerplexityResult {
  double nll_sum = 0;  // nats
  int64_t tokens = 0;  // tokens scored
  int stories = 0;
  double seconds = 0;  // forward-pass wall time
  double kv_bytes_per_token = 0;
  double mean_nll() const { return tokens ? nll_sum / tokens : 0; }
  double perplexity() const;
};

// Scores every next token after position 0 of each story (EOS not scored),
// one fresh sequence in `cache` per story. `progress(done, total)` is called
// after each story if set.
absl::StatusOr<PerplexityResult> EvaluatePerplexity(
    const Model& model, const Tokenizer& tok, const std::vector<std::string>& stories,
    KvCache* cache, int max_tokens = 512,
    const std::function<void(int, int)>& progress = nullptr);

// Generates `steps` tokens after `prompt` (BOS alone if empty); stops at EOS
// or BOS. temperature 0 is greedy. Returns the text (prompt included).
absl::StatusOr<std::string> Generate(const Model& model, const Tokenizer& tok, KvCache* cache,
                                     const std::string& prompt, int steps, float temperature,
                                     uint64_t seed, std::vector<int>* tokens_out = nullptr);

// Runs each chosen story and records Q/K/V of the chosen layers (all if
// empty).
absl::StatusOr<KvTrace> TraceStories(const Model& model, const Tokenizer& tok,
                                     const std::vector<std::string>& stories,
                                     const std::vector<int>& story_ids,
                                     const std::vector<int>& layers, int max_tokens = 512);

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_EVAL_H_
