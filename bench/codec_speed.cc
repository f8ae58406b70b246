// Codec encode/decode throughput on one core, in GB/s of f16 KV data, with
// memcpy of the same bytes measured in the same run as the ceiling.
//   bazel run -c opt //bench:codec_speed -- --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Chunk: 1 layer x 8 KV heads x 1024 tokens x 128 dims (2M elements each of
// K and V, 8 MiB of f16 KV); decode writes f32.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "codec/codec.h"

namespace kvrecall {
namespace {

constexpr int kHeads = 8, kTokens = 1024, kDim = 128;
constexpr size_t kElems = size_t(kHeads) * kTokens * kDim;
constexpr size_t kF16Bytes = 2 * kElems * 2;  // K and V as f16

struct Data {
  std::vector<float> k, v, q;
  KvChunkRef chunk;
  Data() {
    std::mt19937 rng(1);
    std::normal_distribution<float> n01;
    k.resize(kElems), v.resize(kElems), q.resize(size_t(kHeads) * 2 * 64 * kDim);
    for (size_t i = 0; i < kElems; ++i) {
      k[i] = n01(rng) * (i % kDim == 5 ? 8.0f : 1.0f);
      v[i] = 0.5f * n01(rng);
    }
    for (float& x : q) x = n01(rng);
    chunk.layout.num_layers = 1;
    chunk.layout.num_q_heads = 2 * kHeads;
    chunk.layout.num_kv_heads = kHeads;
    chunk.layout.head_dim = kDim;
    chunk.layer_count = 1;
    chunk.tokens = kTokens;
    chunk.k = k.data();
    chunk.v = v.data();
  }
};

const Data& TheData() {
  static const Data* d = new Data();
  return *d;
}

// Ceilings: memcpy of the chunk's f16 bytes (8 MiB, the unit every rate
// here is expressed in) and of its f32 size (16 MiB, what Decode writes).
void BM_Memcpy(benchmark::State& state) {
  const size_t bytes = kF16Bytes * state.range(0);
  std::vector<char> src(bytes, 1), dst(bytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * bytes);
}
BENCHMARK(BM_Memcpy)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void Encode(benchmark::State& state, const char* spec) {
  auto codec = MakeCodec(spec);
  const Data& d = TheData();
  EncodeOptions o;
  o.queries = d.q.data();
  o.num_queries = 64;
  for (auto _ : state) {
    auto block = (*codec)->Encode(d.chunk, &o);
    if (!block.ok()) state.SkipWithError(std::string(block.status().message()).c_str());
    benchmark::DoNotOptimize(block);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * kF16Bytes);
}

// Encodes the chunk once with `spec`; the view points into *block.
BlockView EncodeOnce(const char* spec, std::unique_ptr<KvCodec>* codec, std::string* block) {
  *codec = std::move(*MakeCodec(spec));
  const Data& d = TheData();
  EncodeOptions o;
  o.queries = d.q.data();
  o.num_queries = 64;
  *block = *(*codec)->Encode(d.chunk, &o);
  return *ParseBlock(AsBytes(*block));
}

void Decode(benchmark::State& state, const char* spec) {
  std::unique_ptr<KvCodec> codec;
  std::string block;
  const BlockView view = EncodeOnce(spec, &codec, &block);
  // 64-byte aligned outputs, as an attention buffer would be.
  std::unique_ptr<float, decltype(&std::free)> k(static_cast<float*>(std::aligned_alloc(64, kElems * 4)), &std::free),
      v(static_cast<float*>(std::aligned_alloc(64, kElems * 4)), &std::free);
  for (auto _ : state) {
    if (!codec->Decode(view, k.get(), v.get()).ok()) state.SkipWithError("decode");
    benchmark::DoNotOptimize(k.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * kF16Bytes);
  state.counters["block_MiB"] = block.size() / 1048576.0;
}

void DecodeRows(benchmark::State& state, const char* spec) {
  // A retrieval gather: 3% of the rows, scattered.
  std::unique_ptr<KvCodec> codec;
  std::string block;
  const BlockView view = EncodeOnce(spec, &codec, &block);
  std::vector<int> rows;
  for (int t = 0; t < kTokens; t += 33) rows.push_back(t);
  std::vector<float> k(size_t(kHeads) * rows.size() * kDim), v(k.size());
  for (auto _ : state) {
    if (!codec->DecodeRows(view, rows, k.data(), v.data()).ok()) state.SkipWithError("rows");
    benchmark::DoNotOptimize(k.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * 2 * k.size() * 2);
}

const char* kSpecs[] = {"f16", "kivi:bits=2", "kivi:bits=4", "qwc:kbits=4,vbits=2", "gear:bits=2", "gear_l:bits=2",
                        "squat:bits=2"};

[[maybe_unused]] const bool kRegistered = [] {
  for (const char* s : kSpecs) {
    benchmark::RegisterBenchmark((std::string("Decode/") + s).c_str(), Decode, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark((std::string("DecodeRows3pct/") + s).c_str(), DecodeRows, s)->Unit(benchmark::kMicrosecond)->UseRealTime();
    benchmark::RegisterBenchmark((std::string("Encode/") + s).c_str(), Encode, s)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  return true;
}();

}  // namespace
}  // namespace kvrecall

BENCHMARK_MAIN();
