// The kvrecall demo: a real workload through the engine, printing what it
// achieved. Grows with each capability; today: the stories260K model run
// through the KV-cache interface on real text, its KV packed into verified
// block containers with chained BlockKeys; the same stories through every
// codec (streaming) and through retrieval attention.
//   bazel run -c opt //engine:demo -- [--stories N]
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "codec/block_key.h"
#include "codec/container.h"
#include "codec/half.h"
#include "common/shared_data.h"
#include "absl/strings/str_format.h"
#include "engine/cache_factory.h"
#include "engine/eval.h"
#include "engine/transformer.h"

ABSL_FLAG(int, stories, 20, "stories to score");
ABSL_FLAG(std::string, data_dir, "", "data directory (default: ../shared/data)");

namespace kvrecall {
namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "demo: %s\n", s.ToString().c_str());
  return 1;
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int Run() {
  std::string dir = absl::GetFlag(FLAGS_data_dir);
  if (dir.empty()) {
    auto found = FindDataDir();
    if (!found.ok()) return Fail(found.status());
    dir = *found;
  }
  Env* env = Env::Default();
  auto model = Model::Load(env, dir + "/stories260K.bin");
  if (!model.ok()) return Fail(model.status());
  auto tok = Tokenizer::Load(env, dir + "/tok512.bin", (*model)->config().vocab_size);
  if (!tok.ok()) return Fail(tok.status());
  auto stories = LoadStories(env, dir + "/tinystories_valid_first1000.txt");
  if (!stories.ok()) return Fail(stories.status());
  const ModelConfig& c = (*model)->config();
  const KvLayout layout = (*model)->kv_layout();
  std::printf("kvrecall demo — model %s: %d layers, %d query / %d KV heads, head_dim %d, %d-token context\n",
              (*model)->id().c_str(), c.n_layers, c.n_heads, c.n_kv_heads, c.head_size(), c.seq_len);

  // 1. Generation through the KV-cache interface.
  auto cache = NewExactKvCache();
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int> gen_tokens;
  auto text = Generate(**model, **tok, cache.get(), "Once upon a time", 60, 0.0f, 1, &gen_tokens);
  if (!text.ok()) return Fail(text.status());
  std::string shown = *text;
  for (size_t i = 0; (i = shown.find('\n', i)) != std::string::npos; i += 3) shown.replace(i, 1, "\n  ");
  std::printf("\n[generate] greedy, 60 tokens in %.1f ms:\n  %s\n", 1e3 * Seconds(t0), shown.c_str());

  // 2. Perplexity on held-out stories.
  const int n = std::min<int>(absl::GetFlag(FLAGS_stories), static_cast<int>(stories->size()));
  std::vector<std::string> subset(stories->begin(), stories->begin() + n);
  auto ppl = EvaluatePerplexity(**model, **tok, subset, cache.get());
  if (!ppl.ok()) return Fail(ppl.status());
  std::printf("\n[perplexity] %d held-out TinyStories, %lld tokens scored: perplexity %.4f (mean NLL %.4f nats)\n"
              "  %.0f tokens/s on one core; exact f32 KV cache: %.0f bytes per token\n",
              ppl->stories, static_cast<long long>(ppl->tokens), ppl->perplexity(), ppl->mean_nll(),
              ppl->tokens / ppl->seconds, ppl->kv_bytes_per_token);

  // 3. The same stories with compressed KV (codecs streaming in every layer)
  //    and with retrieval (attention over sinks + window + top-10%).
  KvCacheContext ctx;
  ctx.model_id = (*model)->id();
  ctx.num_layers = c.n_layers;
  ctx.k_norms = (*model)->wk_norms();
  ctx.v_norms = (*model)->wv_norms();
  ctx.context_len = c.seq_len;
  std::vector<int> cal_ids;
  for (int i = static_cast<int>(stories->size()) - 20; i < static_cast<int>(stories->size()); ++i) cal_ids.push_back(i);
  auto calibration = TraceStories(**model, **tok, *stories, cal_ids, {}, 512);
  if (!calibration.ok()) return Fail(calibration.status());
  ctx.calibration = &*calibration;
  std::printf("\n[kv caches] same %d stories; Δppl vs exact and KV bytes per token (f32 exact: %.0f)\n", ppl->stories,
              ppl->kv_bytes_per_token);
  for (const char* spec : {"f16", "kivi:bits=2", "qwc:kbits=4,vbits=2", "squat:bits=2", "gear:bits=4", "a2ats:topk=0.1",
                           "quest:topk=0.1"}) {
    auto kv = MakeKvCache(spec, ctx);
    if (!kv.ok()) return Fail(kv.status());
    auto r = EvaluatePerplexity(**model, **tok, subset, kv->get());
    if (!r.ok()) return Fail(r.status());
    const bool retrieval = IsRetrievalCacheSpec(spec);
    std::printf("  %-22s ppl %.4f (%+.4f)  %s\n", spec, r->perplexity(), r->perplexity() - ppl->perplexity(),
                retrieval ? "attention over 4 sinks + a 64-token window + each head's top-K, K = 10% of the context"
                          : absl::StrFormat("%.0f bytes/token (%.1fx smaller)", r->kv_bytes_per_token,
                                            ppl->kv_bytes_per_token / r->kv_bytes_per_token).c_str());
  }

  // 4. The first story's KV, packed as kvrecall stores it: 16-token f16 blocks
  //    keyed by chained BlockKeys, each verified on read.
  const std::vector<int> tokens = StoryTokens(**tok, subset[0], 512);
  std::vector<std::vector<float>> k(c.n_layers), v(c.n_layers);  // [layer][pos][kv_dim]
  Transformer tf(model->get());
  tf.set_hook([&](const LayerActivations& a) {
    k[a.layer].insert(k[a.layer].end(), a.k, a.k + c.kv_dim());
    v[a.layer].insert(v[a.layer].end(), a.v, a.v + c.kv_dim());
  });
  if (absl::Status s = cache->Begin(layout); !s.ok()) return Fail(s);
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    if (auto r = tf.Forward(tokens[pos], static_cast<int>(pos), cache.get()); !r.ok()) return Fail(r.status());
  }
  KvLayout block_layout = layout;
  block_layout.dtype = DType::kF16;
  const Hash128 fp = ModelFingerprint((*model)->id(), block_layout, /*codec_id=*/1, "f16", 0);
  const int block_tokens = 16;
  std::vector<int32_t> ids(tokens.begin(), tokens.end());
  const std::vector<BlockKey> keys = ChainBlockKeys(fp, "demo", ids, block_tokens);
  size_t bytes = 0, verified = 0;
  double max_err = 0;
  for (size_t b = 0; b < keys.size(); ++b) {
    // Sections: K then V, each [layer][kv_head][token][head_dim] in f16.
    std::vector<uint16_t> ks, vs;
    for (int l = 0; l < c.n_layers; ++l)
      for (int h = 0; h < c.n_kv_heads; ++h)
        for (int t = 0; t < block_tokens; ++t)
          for (int e = 0; e < c.head_size(); ++e) {
            const size_t i = (b * block_tokens + t) * c.kv_dim() + h * c.head_size() + e;
            ks.push_back(FloatToHalf(k[l][i]));
            vs.push_back(FloatToHalf(v[l][i]));
            max_err = std::max<double>(max_err, std::fabs(HalfToFloat(ks.back()) - k[l][i]));
          }
    BlockHeader h;
    h.codec_id = 1;
    h.layout = block_layout;
    h.layer_count = c.n_layers;
    h.first_token = b * block_tokens;
    h.token_count = block_tokens;
    h.fingerprint = fp;
    auto block = BuildBlock(h, {absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(ks.data()), ks.size() * 2),
                                absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(vs.data()), vs.size() * 2)});
    if (!block.ok()) return Fail(block.status());
    bytes += block->size();
    if (ParseBlock(AsBytes(*block)).ok()) ++verified;
  }
  std::printf("\n[blocks] story 0: %zu tokens -> %zu full %d-token blocks, %zu/%zu verified (XXH3-64)\n"
              "  f16 blocks: %.1f bytes per token incl. headers (f32 cache %.0f), max |K error| %.2e\n"
              "  first key %s, last key %s\n",
              tokens.size(), keys.size(), block_tokens, verified, keys.size(),
              keys.empty() ? 0.0 : static_cast<double>(bytes) / (keys.size() * block_tokens),
              ppl->kv_bytes_per_token, max_err, keys.empty() ? "-" : keys.front().ToHex().c_str(),
              keys.empty() ? "-" : keys.back().ToHex().c_str());
  return verified == keys.size() ? 0 : 1;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return kvrecall::Run();
}
