#include "engine/eval.h"

#include <chrono>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "engine/transformer.h"

namespace kvrecall {

std::vector<std::string> SplitStories(absl::string_view text) {
  std::vector<std::string> out;
  for (absl::string_view s : absl::StrSplit(text, "<|endoftext|>")) {
    s = absl::StripAsciiWhitespace(s);
    if (!s.empty()) out.emplace_back(s);
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> LoadStories(Env* env, const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path));
  return SplitStories(text);
}

std::vector<int> StoryTokens(const Tokenizer& tok, const std::string& story, int max_tokens) {
  std::vector<int> t = {Tokenizer::kBos};
  for (int id : tok.Encode(story)) t.push_back(id);
  if (static_cast<int>(t.size()) > max_tokens) t.resize(max_tokens);
  return t;
}

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

absl::StatusOr<PerplexityResult> EvaluatePerplexity(const Model& model, const Tokenizer& tok,
                                                    const std::vector<std::string>& stories,
                                                    KvCache* cache, int max_tokens,
                                                    const std::function<void(int, int)>& progress) {
  if (max_tokens < 2 || max_tokens > model.config().seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", max_tokens, " not in [2, ",
                                                   model.config().seq_len, "]"));
  }
  Transformer tf(&model);
  PerplexityResult r;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t s = 0; s < stories.size(); ++s) {
    const std::vector<int> tokens = StoryTokens(tok, stories[s], max_tokens);
    RETURN_IF_ERROR(cache->Begin(model.kv_layout()));
    for (size_t pos = 0; pos + 1 < tokens.size(); ++pos) {
      ASSIGN_OR_RETURN(absl::Span<const float> logits, tf.Forward(tokens[pos], static_cast<int>(pos), cache));
      r.nll_sum += NegLogLikelihood(logits, tokens[pos + 1]);
      ++r.tokens;
    }
    ++r.stories;
    r.kv_bytes_per_token = cache->BytesPerToken();
    if (progress) progress(static_cast<int>(s + 1), static_cast<int>(stories.size()));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

absl::StatusOr<std::string> Generate(const Model& model, const Tokenizer& tok, KvCache* cache,
                                     const std::string& prompt, int steps, float temperature,
                                     uint64_t seed, std::vector<int>* tokens_out) {
  std::vector<int> tokens = {Tokenizer::kBos};
  for (int id : tok.Encode(prompt)) tokens.push_back(id);
  const int limit = std::min<int>(model.config().seq_len, static_cast<int>(tokens.size()) + steps);
  Transformer tf(&model);
  RETURN_IF_ERROR(cache->Begin(model.kv_layout()));
  std::mt19937_64 rng(seed);
  std::string text;
  int prev = Tokenizer::kBos;
  for (size_t i = 1; i < tokens.size(); ++i) {
    text += tok.Decode(prev, tokens[i]);
    prev = tokens[i];
  }
  for (int pos = 0; pos + 1 < limit; ++pos) {
    ASSIGN_OR_RETURN(absl::Span<const float> logits, tf.Forward(tokens[pos], pos, cache));
    if (pos + 1 < static_cast<int>(tokens.size())) continue;  // still in the prompt
    const int next = SampleToken(logits, temperature, &rng);
    if (next == Tokenizer::kBos || next == Tokenizer::kEos) break;
    text += tok.Decode(tokens.back(), next);
    tokens.push_back(next);
  }
  if (tokens_out) *tokens_out = tokens;
  return text;
}

absl::StatusOr<KvTrace> TraceStories(const Model& model, const Tokenizer& tok,
                                     const std::vector<std::string>& stories,
                                     const std::vector<int>& story_ids,
                                     const std::vector<int>& layers_in, int max_tokens) {
  const ModelConfig& c = model.config();
  std::vector<int> layers = layers_in;
  if (layers.empty()) {
    for (int l = 0; l < c.n_layers; ++l) layers.push_back(l);
  }
  std::vector<int> slot(c.n_layers, -1);
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || layers[i] >= c.n_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layers[i], " not in [0, ", c.n_layers, ")"));
    }
    slot[layers[i]] = static_cast<int>(i);
  }
  KvTrace trace;
  trace.layout = model.kv_layout();
  Transformer tf(&model);
  std::unique_ptr<KvCache> cache = NewExactKvCache();
  const size_t qn = c.dim, kn = c.kv_dim();
  for (int sid : story_ids) {
    if (sid < 0 || sid >= static_cast<int>(stories.size())) {
      return absl::InvalidArgumentError(absl::StrCat("story ", sid, " not in [0, ", stories.size(), ")"));
    }
    const std::vector<int> tokens = StoryTokens(tok, stories[sid], max_tokens);
    std::vector<KvTraceRecord> recs(layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
      recs[i].story = sid;
      recs[i].layer = layers[i];
      recs[i].tokens = static_cast<uint32_t>(tokens.size());
    }
    tf.set_hook([&](const LayerActivations& a) {
      if (slot[a.layer] < 0) return;
      KvTraceRecord& r = recs[slot[a.layer]];
      r.q.insert(r.q.end(), a.q, a.q + qn);
      r.q_pre_rope.insert(r.q_pre_rope.end(), a.q_pre_rope, a.q_pre_rope + qn);
      r.k_pre_rope.insert(r.k_pre_rope.end(), a.k_pre_rope, a.k_pre_rope + kn);
      r.k.insert(r.k.end(), a.k, a.k + kn);
      r.v.insert(r.v.end(), a.v, a.v + kn);
    });
    RETURN_IF_ERROR(cache->Begin(model.kv_layout()));
    for (size_t pos = 0; pos < tokens.size(); ++pos) {
      RETURN_IF_ERROR(tf.Forward(tokens[pos], static_cast<int>(pos), cache.get()).status());
    }
    for (auto& r : recs) trace.records.push_back(std::move(r));
  }
  return trace;
}

}  // namespace kvrecall
