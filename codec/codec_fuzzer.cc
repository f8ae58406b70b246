// libFuzzer target for the codec decoders. Blocks with a wrong checksum never
// reach a decoder, so the target builds a valid container around fuzzed
// sections and header fields, then runs Decode and DecodeRows: they must
// reject or decode without crashing or reading out of bounds.
//   input: [codec][tokens][kv heads][head_dim][u16 len, bytes]...
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "codec/codec.h"

namespace {
const char* kSpecs[] = {"f16", "bf16", "f32", "kivi:bits=2", "kivi:bits=3", "qwc:kbits=4,vbits=2",
                        "gear", "gear_l", "squat:rank=4,block=8", "kivi:bits=1,meta=f32"};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvrecall;
  if (size < 4) return 0;
  auto codec = MakeCodec(kSpecs[data[0] % (sizeof(kSpecs) / sizeof(kSpecs[0]))]);
  if (!codec.ok()) return 0;
  BlockHeader h;
  h.codec_id = static_cast<uint16_t>((*codec)->id());
  h.layout.num_layers = 1;
  h.layout.num_kv_heads = 1 + data[2] % 4;
  h.layout.num_q_heads = h.layout.num_kv_heads;
  const int dims[] = {8, 16, 32, 64, 128};
  h.layout.head_dim = dims[data[3] % 5];
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
  return 0;
}
