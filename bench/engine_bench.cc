// Engine forward-pass speed on one core: tokens/s for whole sequences of
// several lengths (the cost per token grows only through attention).
//   bazel run -c opt //bench:engine_bench
#include <benchmark/benchmark.h>

#include <memory>

#include "common/shared_data.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/transformer.h"

namespace kvrecall {
namespace {

const Model* TheModel() {
  static const Model* model = [] () -> const Model* {
    auto dir = FindDataDir();
    if (!dir.ok()) return nullptr;
    auto m = Model::Load(Env::Default(), *dir + "/stories260K.bin");
    return m.ok() ? m->release() : nullptr;
  }();
  return model;
}

void BM_Sequence(benchmark::State& state) {
  const Model* model = TheModel();
  if (!model) {
    state.SkipWithError("stories260K.bin not found (set KVRECALL_DATA)");
    return;
  }
  const int len = static_cast<int>(state.range(0));
  Transformer tf(model);
  auto cache = NewExactKvCache();
  for (auto _ : state) {
    if (!cache->Begin(model->kv_layout()).ok()) state.SkipWithError("begin");
    for (int pos = 0; pos < len; ++pos) {
      auto logits = tf.Forward((pos * 37 + 11) % 512, pos, cache.get());
      benchmark::DoNotOptimize(logits);
    }
  }
  state.SetItemsProcessed(state.iterations() * len);
}
BENCHMARK(BM_Sequence)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvrecall

BENCHMARK_MAIN();
