// Attend probe: where the store's near-data attention spends its time per
// row, in one process and on one thread, without transport or client. A host
// tier holds `blocks` blocks (--codec, f16 by default; one KV head, 128-d, `tokens` rows each,
// 256-byte chunk checksums); each round reads a random `fraction` of every
// block's rows through BlockStore::Attend (the server's path), then the same
// rows through the same steps done by hand (verify, decode, attend) so each
// step can be timed alone, and finally exact attention over every row of
// the blocks as f32 (what full attention costs per row). Medians of rounds.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/results_io.h"
#include "codec/attention.h"
#include "codec/codec.h"
#include "codec/container.h"
#include "codec/random_block.h"
#include "store/block_store.h"

ABSL_FLAG(int, blocks, 1024, "blocks in the host tier");
ABSL_FLAG(int, tokens, 1024, "rows per block");
ABSL_FLAG(double, fraction, 0.037, "fraction of each block's rows read per round");
ABSL_FLAG(int, run, 1, "rows per run: picks come in runs of this many adjacent rows");
ABSL_FLAG(int, rounds, 7, "rounds (median reported)");
ABSL_FLAG(std::string, codec, "f16", "codec of the blocks (f16, kivi:bits=4, ...)");
ABSL_FLAG(int, chunk_shift, 8, "blocks carry a checksum per 2^chunk_shift bytes (0: none, whole-block verification)");

namespace kvrecall {
namespace {

using Clock = std::chrono::steady_clock;

int Run() {
  const int nb = absl::GetFlag(FLAGS_blocks), T = absl::GetFlag(FLAGS_tokens), d = 128, G = 4;
  const int run = std::max(1, absl::GetFlag(FLAGS_run));
  const std::string codec = absl::GetFlag(FLAGS_codec);
  if (auto c = MakeCodec(codec); !c.ok()) return std::fprintf(stderr, "--codec: %s\n", c.status().ToString().c_str()), 2;
  StoreOptions o;
  o.host_bytes = uint64_t(nb) * (uint64_t(T) * d * 4 + (64 << 10)) * 2;
  o.max_host_block_fraction = 1.0;
  auto store = BlockStore::Open(o, {{"p", "probe-token", o.host_bytes, "salt"}});
  if (!store.ok()) return std::fprintf(stderr, "%s\n", store.status().ToString().c_str()), 1;
  const uint32_t ns = *(*store)->Authenticate("probe-token");
  std::fprintf(stderr, "[attend_probe] writing %d blocks of %d rows\n", nb, T);
  std::vector<BlockKey> keys;
  for (int b = 0; b < nb; ++b) {
    const std::string blk = RandomBlock(codec, 1, 1, d, T, 1000 + b, absl::GetFlag(FLAGS_chunk_shift));
    keys.push_back(BlockKey{uint64_t(b) + 1, 77});
    if (auto s = (*store)->Put(ns, keys.back(), AsBytes(blk), false); !s.ok()) {
      return std::fprintf(stderr, "%s\n", s.ToString().c_str()), 1;
    }
  }
  std::mt19937 rng(5);
  std::vector<float> q(size_t(G) * d);
  std::normal_distribution<float> n01;
  for (float& x : q) x = n01(rng) * 0.1f;
  const float scale = 1 / std::sqrt(float(d));
  const int per_block = std::max(1, int(absl::GetFlag(FLAGS_fraction) * T));
  std::vector<double> t_store, t_lease, t_decode, t_attend, t_inplace, t_exact;
  int64_t rows_total = 0;
  std::vector<float> out, lse;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    std::vector<BlockStore::AttendItem> items;
    for (int b = 0; b < nb; ++b) {
      std::vector<int> rows;
      while (int(rows.size()) < per_block) {
        const int start = int(rng() % T);
        for (int j = 0; j < run && start + j < T; ++j) rows.push_back(start + j);
      }
      std::sort(rows.begin(), rows.end());
      rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
      items.push_back({keys[b], std::move(rows)});
    }
    rows_total = 0;
    for (const auto& it : items) rows_total += int64_t(it.rows.size());
    auto t0 = Clock::now();
    if (auto s = (*store)->Attend(ns, items, G, scale, q, &out, &lse); !s.ok()) {
      return std::fprintf(stderr, "%s\n", s.ToString().c_str()), 1;
    }
    t_store.push_back(MsSince(t0));
    // By hand: lease + verify the rows' chunks; decode; attend; and the
    // codec's AttendRows over the same rows (f16: in place, no decode).
    double lease_ms = 0, decode_ms = 0, attend_ms = 0, inplace_ms = 0;
    std::vector<float> k, v, part(size_t(G) * d), plse(G), scratch;
    for (const auto& it : items) {
      auto t1 = Clock::now();
      std::unique_ptr<KvCodec> codec;
      auto lease = (*store)->LeaseRows(ns, it.key, it.rows, &codec, LeaseFor::kScan);  // verifies the rows' chunks
      if (!lease.ok()) return 1;
      const BlockView* view = &lease->view();
      lease_ms += MsSince(t1);
      t1 = Clock::now();
      const int R = int(it.rows.size());
      k.resize(size_t(R) * d), v.resize(k.size());
      if (!codec->DecodeRows(*view, it.rows, k.data(), v.data()).ok()) return 1;
      decode_ms += MsSince(t1);
      t1 = Clock::now();
      AttendGroup(q.data(), G, k.data(), v.data(), R, d, d, scale, part.data(), plse.data());
      attend_ms += MsSince(t1);
      t1 = Clock::now();
      if (!codec->AttendRows(*view, it.rows, q.data(), G, scale, part.data(), plse.data(), &scratch).ok()) return 1;
      inplace_ms += MsSince(t1);
    }
    t_lease.push_back(lease_ms), t_decode.push_back(decode_ms), t_attend.push_back(attend_ms);
    t_inplace.push_back(inplace_ms);
  }
  {  // Exact attention over all rows of 64 blocks as f32 (per-row cost of full attention).
    const int eb = std::min(nb, 64);
    std::vector<float> k(size_t(eb) * T * d), v(k.size()), o(size_t(G) * d), l(G);
    for (float& x : k) x = n01(rng);
    for (float& x : v) x = n01(rng);
    for (int r = 0; r < absl::GetFlag(FLAGS_rounds); ++r) {
      auto t0 = Clock::now();
      AttendGroup(q.data(), G, k.data(), v.data(), int64_t(eb) * T, d, d, scale, o.data(), l.data());
      t_exact.push_back(MsSince(t0) / (double(eb) * T) * 1e6);  // ns per row
    }
  }
  const double rows = double(rows_total);
  std::printf("blocks %d x %d rows (%s, chunk_shift %d), %.1f%% read in runs of %d: %.0f rows per round (one thread)\n",
              nb, T, codec.c_str(), absl::GetFlag(FLAGS_chunk_shift), 100.0 * rows / (double(nb) * T), run, rows);
  std::printf("BlockStore::Attend      %8.2f ms  %6.0f ns/row\n", Median(t_store), Median(t_store) / rows * 1e6);
  std::printf("  lease + verify rows   %8.2f ms  %6.0f ns/row\n", Median(t_lease), Median(t_lease) / rows * 1e6);
  std::printf("  decode rows           %8.2f ms  %6.0f ns/row\n", Median(t_decode), Median(t_decode) / rows * 1e6);
  std::printf("  attend rows (G=%d)     %8.2f ms  %6.0f ns/row\n", G, Median(t_attend), Median(t_attend) / rows * 1e6);
  std::printf("  codec AttendRows      %8.2f ms  %6.0f ns/row  (decode + attend in one pass; rows warm)\n",
              Median(t_inplace), Median(t_inplace) / rows * 1e6);
  std::printf("exact attention, f32 rows in order: %6.0f ns/row\n", Median(t_exact));
  return 0;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return kvrecall::Run();
}
