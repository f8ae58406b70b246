// libFuzzer target for the codec decoders. Blocks with a wrong checksum never
// reach a decoder, so the target builds a valid container around fuzzed
// sections and header fields, then runs Decode and DecodeRows (also through a
// chunk-checksummed block's partial view and RowByteRanges): they must
// reject or decode without crashing or reading out of bounds.
//   input: [codec][tokens][kv heads][head_dim][u16 len, bytes]...
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <random>

#include "codec/codec.h"
#include "codec/commvq.h"

namespace {
const char* kSpecs[] = {"f16", "bf16", "f32", "kivi:bits=2", "kivi:bits=3", "qwc:kbits=4,vbits=2",
                        "gear", "gear_l", "squat:rank=4,block=8", "kivi:bits=1,meta=f32"};
constexpr size_t kNumSpecs = sizeof(kSpecs) / sizeof(kSpecs[0]);

// CommVQ blocks need a registered calibration: a small one (1 KV head,
// head_dim 16), trained once on random data.
const std::string& CommVqSpec() {
  static const std::string spec = [] {
    using namespace kvrecall;
    KvLayout l;
    l.num_layers = 1, l.num_q_heads = 1, l.num_kv_heads = 1, l.head_dim = 16, l.keys_pre_rope = true;
    CommVqTrainingSet d;
    std::mt19937 rng(1);
    std::normal_distribution<float> n01;
    d.k_pre.assign(1, std::vector<float>(300 * 16)), d.v.assign(1, std::vector<float>(300 * 16));
    for (float& x : d.k_pre[0]) x = n01(rng);
    for (float& x : d.v[0]) x = n01(rng);
    CommVqConfig cfg = CommVqConfigForBits(2, 16, 3, 4);
    cfg.train.iters = 1;
    auto cal = TrainCommVqCalibration(l, 1, d, cfg);
    if (!cal.ok()) return std::string("f16");
    RegisterCommVqCalibration(*cal);
    return CommVqCodecSpec(**cal);
  }();
  return spec;
}
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvrecall;
  if (size < 4) return 0;
  const bool commvq = data[0] % (kNumSpecs + 1) == kNumSpecs;
  auto codec = MakeCodec(commvq ? CommVqSpec() : kSpecs[data[0] % (kNumSpecs + 1) % kNumSpecs]);
  if (!codec.ok()) return 0;
  BlockHeader h;
  h.codec_id = static_cast<uint16_t>((*codec)->id());
  h.layout.num_layers = 1;
  h.layout.num_kv_heads = 1 + data[2] % 4;
  h.layout.num_q_heads = h.layout.num_kv_heads;
  const int dims[] = {8, 16, 32, 64, 128};
  h.layout.head_dim = dims[data[3] % 5];
  if (commvq) h.layout.num_kv_heads = h.layout.num_q_heads = 1, h.layout.head_dim = 16, h.layout.keys_pre_rope = true;
  h.layer_count = 1;
  h.token_count = 1 + data[1] % 64;
  const std::string params = (*codec)->params();
  std::vector<std::string> owned = {params};
  size_t off = 4;
  while (off + 2 <= size && owned.size() < 12) {
    const size_t len = std::min<size_t>(data[off] | (data[off + 1] << 8), size - off - 2);
    owned.emplace_back(reinterpret_cast<const char*>(data + off + 2), len);
    off += 2 + len;
  }
  std::vector<absl::Span<const uint8_t>> sections;
  for (const std::string& s : owned) sections.push_back(AsBytes(s));
  auto block = BuildBlock(h, sections);
  if (!block.ok()) return 0;
  auto view = ParseBlock(AsBytes(*block));
  if (!view.ok()) __builtin_trap();  // a block we built must parse
  const size_t n = size_t(h.layout.num_kv_heads) * h.token_count * h.layout.head_dim;
  std::vector<float> k(n), v(n);
  (void)(*codec)->Decode(*view, k.data(), v.data());
  const int rows[] = {0, static_cast<int>(h.token_count) - 1};
  std::vector<float> rk(size_t(h.layout.num_kv_heads) * 2 * h.layout.head_dim), rv(rk.size());
  (void)(*codec)->DecodeRows(*view, rows, rk.data(), rv.data());
  // The row reader's path: the same block with chunk checksums, a partial
  // view, the codec's list of the rows' bytes (each inside the block), then
  // their verification (which must pass: nothing was damaged).
  h.chunk_shift = kMinChunkShift;
  auto chunked = BuildBlock(h, sections);
  if (!chunked.ok()) __builtin_trap();
  auto partial = ParseBlockForRows(AsBytes(*chunked));
  if (!partial.ok() || !partial->partial) __builtin_trap();
  std::vector<absl::Span<const uint8_t>> ranges;
  if ((*codec)->RowByteRanges(*partial, rows, &ranges).ok()) {
    if (!VerifyBlockRanges(*partial, ranges).ok()) __builtin_trap();
    (void)(*codec)->DecodeRows(*partial, rows, rk.data(), rv.data());
    // Attention over the same rows (f16 reads them in place).
    const int G = 1 + data[0] % 3;
    std::vector<float> q(size_t(h.layout.num_kv_heads) * G * h.layout.head_dim, 0.5f), out(q.size()),
        lse(size_t(h.layout.num_kv_heads) * G);
    (void)(*codec)->AttendRows(*partial, rows, q.data(), G, 0.1f, out.data(), lse.data());
  }
  return 0;
}
