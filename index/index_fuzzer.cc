// libFuzzer target for retrieval-index loading. Random bytes rarely pass the
// checksum, so the target also wraps the fuzzed bytes as the state of a valid
// container for each method: LoadState must reject or accept without
// crashing, and an accepted index must score safely.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "codec/bytes.h"
#include "common/hash.h"
#include "index/retrieval_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvrecall;
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  (void)LoadRetrievalIndex(in);
  if (size < 1) return 0;
  const char* specs[] = {"oracle", "a2ats:b=64,centroids=4,iters=1,seed=1", "quest:page=4", "pq:m=2,nbits=4",
                         "commvq:digit=2,iters=1,seed=1,stages=2,train=8192",
                         "a2ats:b=64,centroids=4,iters=1,seed=1,outliers=2",
                         "a2ats:b=64,centroids=4,iters=1,seed=1,outliers=2,band=3,horizon=64,slow=8"};
  KvLayout l;
  l.num_layers = 1, l.num_q_heads = 1, l.num_kv_heads = 1, l.head_dim = 8;
  const std::string spec = specs[data[0] % 7];
  std::string out;
  AppendLE<uint32_t>(&out, 0x4952564bu);
  AppendLE<uint16_t>(&out, 1);
  AppendLE<uint16_t>(&out, 0);
  AppendLE<uint32_t>(&out, static_cast<uint32_t>(spec.size()));
  out += spec;
  uint8_t lb[kEncodedLayoutBytes];
  EncodeLayout(l, lb);
  out.append(reinterpret_cast<const char*>(lb), sizeof(lb));
  AppendLE<uint64_t>(&out, size - 1);
  out.append(in.data() + 1, size - 1);
  AppendLE<uint64_t>(&out, Checksum64(out.data(), out.size()));
  auto idx = LoadRetrievalIndex(out);
  if (idx.ok() && (*idx)->trained() && (*idx)->size() < (1 << 16)) {
    std::vector<float> q(8, 0.5f), scores((*idx)->size());
    (void)(*idx)->Score(q.data(), q.data(), (*idx)->size(), absl::MakeSpan(scores));
    SelectionConfig cfg;
    cfg.sinks = 1, cfg.window = 2, cfg.topk = 3;
    (void)SelectTokens(**idx, q.data(), q.data(), 1, (*idx)->size() + 5, cfg);
  }
  return 0;
}
