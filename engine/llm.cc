// engine:llm — run the stories260K (or any llama2.c version-0) model through
// kvrecall's KV-cache interface.
//
//   bazel run -c opt //engine:llm -- generate [--prompt TEXT] [--steps N] [--temperature T]
//   bazel run -c opt //engine:llm -- perplexity [--stories N] [--first K] [--cache SPEC]
//   bazel run -c opt //engine:llm -- trace --out FILE [--stories N] [--first K] [--layers 0,2]
//
// Data paths default to $KVRECALL_DATA, else ../shared/data beside the
// repository (common/shared_data.h); --data_dir overrides.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "codec/kv_trace.h"
#include "common/shared_data.h"
#include "engine/cache_factory.h"
#include "engine/eval.h"

ABSL_FLAG(std::string, data_dir, "", "directory with stories260K.bin, tok512.bin and the stories");
ABSL_FLAG(std::string, model, "stories260K.bin", "checkpoint file (relative to --data_dir)");
ABSL_FLAG(std::string, tokenizer, "tok512.bin", "tokenizer file (relative to --data_dir)");
ABSL_FLAG(std::string, text, "tinystories_valid_first1000.txt", "stories file (relative to --data_dir)");
ABSL_FLAG(std::string, prompt, "", "generate: prompt text (BOS alone if empty)");
ABSL_FLAG(int, steps, 200, "generate: tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "generate: sampling temperature (0 = greedy)");
ABSL_FLAG(uint64_t, seed, 1, "generate: sampling seed");
ABSL_FLAG(int, stories, 100, "perplexity/trace: number of stories");
ABSL_FLAG(int, first, 0, "perplexity/trace: index of the first story used");
ABSL_FLAG(int, max_tokens, 512, "tokens per story, BOS included (the data README's protocol: 512)");
ABSL_FLAG(std::string, cache, "exact", "KV cache spec (name[:key=value,...])");
ABSL_FLAG(std::string, layers, "", "trace: comma-separated layers (all if empty)");
ABSL_FLAG(std::string, out, "", "trace: output file");

namespace kvrecall {
namespace {

std::string DataPath(const std::string& dir, const std::string& file) {
  return file.empty() || file[0] == '/' ? file : dir + "/" + file;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "llm: %s\n", s.ToString().c_str());
  return 1;
}

int Run(const std::string& command) {
  std::string dir = absl::GetFlag(FLAGS_data_dir);
  if (dir.empty()) {
    absl::StatusOr<std::string> found = FindDataDir(absl::GetFlag(FLAGS_model));
    if (!found.ok()) return Fail(found.status());
    dir = *found;
  }
  Env* env = Env::Default();
  auto model = Model::Load(env, DataPath(dir, absl::GetFlag(FLAGS_model)));
  if (!model.ok()) return Fail(model.status());
  auto tok = Tokenizer::Load(env, DataPath(dir, absl::GetFlag(FLAGS_tokenizer)),
                             (*model)->config().vocab_size);
  if (!tok.ok()) return Fail(tok.status());

  KvCacheContext ctx;
  ctx.model_id = (*model)->id();
  ctx.num_layers = (*model)->config().n_layers;
  ctx.k_norms = (*model)->wk_norms();
  ctx.v_norms = (*model)->wv_norms();
  ctx.context_len = (*model)->config().seq_len;
  if (command == "generate") {
    auto cache = MakeKvCache(absl::GetFlag(FLAGS_cache), ctx);
    if (!cache.ok()) return Fail(cache.status());
    auto text = Generate(**model, **tok, cache->get(), absl::GetFlag(FLAGS_prompt),
                         absl::GetFlag(FLAGS_steps), static_cast<float>(absl::GetFlag(FLAGS_temperature)),
                         absl::GetFlag(FLAGS_seed));
    if (!text.ok()) return Fail(text.status());
    std::printf("%s\n", text->c_str());
    return 0;
  }

  auto all = LoadStories(env, DataPath(dir, absl::GetFlag(FLAGS_text)));
  if (!all.ok()) return Fail(all.status());
  const int first = absl::GetFlag(FLAGS_first), count = absl::GetFlag(FLAGS_stories);
  if (first < 0 || count < 1 || first + count > static_cast<int>(all->size())) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("stories [", first, ", ", first + count,
                                                        ") outside the ", all->size(), " available")));
  }
  // Retrieval caches and CommVQ calibrate on text that is never scored: the
  // last 20 stories of the file.
  absl::StatusOr<KvTrace> calibration;
  if (NeedsCalibration(absl::GetFlag(FLAGS_cache))) {
    std::vector<int> ids;
    for (int i = static_cast<int>(all->size()) - 20; i < static_cast<int>(all->size()); ++i) ids.push_back(i);
    if (first + count > static_cast<int>(all->size()) - 20) {
      return Fail(absl::InvalidArgumentError("this cache calibrates on the last 20 stories; score fewer"));
    }
    calibration = TraceStories(**model, **tok, *all, ids, {}, absl::GetFlag(FLAGS_max_tokens));
    if (!calibration.ok()) return Fail(calibration.status());
    ctx.calibration = &*calibration;
  }
  if (command == "perplexity") {
    std::vector<std::string> stories(all->begin() + first, all->begin() + first + count);
    auto cache = MakeKvCache(absl::GetFlag(FLAGS_cache), ctx);
    if (!cache.ok()) return Fail(cache.status());
    auto r = EvaluatePerplexity(**model, **tok, stories, cache->get(), absl::GetFlag(FLAGS_max_tokens),
                                [](int done, int total) {
                                  if (done % 10 == 0 || done == total) {
                                    std::fprintf(stderr, "\rperplexity: %d/%d stories", done, total);
                                    if (done == total) std::fprintf(stderr, "\n");
                                  }
                                });
    if (!r.ok()) return Fail(r.status());
    std::printf("cache %s: %d stories, mean nll %.5f nats, %.0f tokens/s, kv %.1f bytes/token\n",
                (*cache)->name().c_str(), r->stories, r->mean_nll(), r->tokens / r->seconds,
                r->kv_bytes_per_token);
    std::printf("perplexity %.4f tokens %lld\n", r->perplexity(), static_cast<long long>(r->tokens));
    return 0;
  }
  if (command == "trace") {
    const std::string out = absl::GetFlag(FLAGS_out);
    if (out.empty()) return Fail(absl::InvalidArgumentError("trace needs --out FILE"));
    std::vector<int> layers;
    for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_layers), ',', absl::SkipEmpty())) {
      int l;
      if (!absl::SimpleAtoi(s, &l)) return Fail(absl::InvalidArgumentError(absl::StrCat("bad layer '", s, "'")));
      layers.push_back(l);
    }
    std::vector<int> ids;
    for (int i = first; i < first + count; ++i) ids.push_back(i);
    auto trace = TraceStories(**model, **tok, *all, ids, layers, absl::GetFlag(FLAGS_max_tokens));
    if (!trace.ok()) return Fail(trace.status());
    if (absl::Status s = WriteKvTrace(env, out, *trace); !s.ok()) return Fail(s);
    std::printf("wrote %zu records (%d stories x %zu layers) to %s\n", trace->records.size(), count,
                trace->records.size() / count, out.c_str());
    return 0;
  }
  return Fail(absl::InvalidArgumentError(absl::StrCat("unknown command '", command,
                                                      "' (generate, perplexity, trace)")));
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("llm generate|perplexity|trace [flags]; --helpfull lists flags");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "usage: llm generate|perplexity|trace [flags]\n");
    return 2;
  }
  return kvrecall::Run(args[1]);
}
