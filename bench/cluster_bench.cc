// Cluster benchmark through the public client (issue: client/cluster):
// LookupPrefix latency of a 64-block chain (p50/p99), and Save/Load
// throughput of 64 KiB blocks in batches of 16 from 4 threads, against the
// kvrecall-server nodes registered in --etcd (bench/cluster_bench.sh runs it
// with 1 and with 3 servers from deploy/local/cluster.sh).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "client/kv_client.h"
#include "codec/codec.h"
#include "codec/random_block.h"
#include "codec/container.h"

ABSL_FLAG(std::string, etcd, "127.0.0.1:23790", "etcd endpoint of the cluster");
ABSL_FLAG(std::string, token, "demo-token-123456", "namespace token");
ABSL_FLAG(double, seconds, 2.0, "measuring time per throughput test");
ABSL_FLAG(std::string, label, "", "label for the output row (e.g. the number of servers)");

namespace kvrecall {
namespace {

using Clock = std::chrono::steady_clock;

std::string MakeBlock(uint64_t seed) {
  return RandomF16Block(4, 8, 128, 8, seed);
}

double Pct(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, size_t(q * v.size()))];
}

int Run() {
  KvClient::Options o;
  o.etcd_endpoint = absl::GetFlag(FLAGS_etcd);
  o.namespace_token = absl::GetFlag(FLAGS_token);
  o.namespace_salt = "bench";
  o.io_threads = 8;
  auto c = KvClient::Create(o);
  if (!c.ok()) {
    std::fprintf(stderr, "cluster_bench: %s\n", c.status().ToString().c_str());
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int nodes = (*c)->stats().nodes;
  std::vector<std::string> blocks;
  for (int i = 0; i < 16; ++i) blocks.push_back(MakeBlock(i));
  const size_t bytes = blocks[0].size();
  // A 64-block chain, saved once; then LookupPrefix latency.
  std::vector<BlockKey> chain;
  std::vector<absl::Span<const uint8_t>> spans;
  for (int i = 0; i < 64; ++i) chain.push_back({uint64_t(i), 777}), spans.push_back(AsBytes(blocks[i % 16]));
  for (const auto& s : (*c)->Save(chain, spans).get()) {
    if (!s.ok()) {
      std::fprintf(stderr, "save: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::vector<double> lat;
  for (int i = 0; i < 300; ++i) {
    const auto t = Clock::now();
    auto p = (*c)->LookupPrefix(chain).get();
    lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
    if (!p.ok() || *p != 64) {
      std::fprintf(stderr, "lookup found %d of 64\n", p.ok() ? *p : -1);
      return 1;
    }
  }
  // Throughput: 4 threads, batches of 16 blocks.
  auto drive = [&](bool save) {
    std::atomic<bool> stop{false};
    std::atomic<int64_t> moved{0};
    std::vector<std::thread> ts;
    const auto t0 = Clock::now();
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&, t] {
        std::vector<std::string> bufs(16, std::string(bytes + 4096, '\0'));
        for (uint64_t it = 0; !stop; ++it) {
          std::vector<BlockKey> keys;
          for (int j = 0; j < 16; ++j) keys.push_back({uint64_t(t * 1000000 + (it % 16) * 16 + j), 888});
          if (save) {
            std::vector<absl::Span<const uint8_t>> sp;
            for (int j = 0; j < 16; ++j) sp.push_back(AsBytes(blocks[j]));
            for (const auto& s : (*c)->Save(keys, sp).get()) moved += s.ok() ? int64_t(bytes) : 0;
          } else {
            std::vector<absl::Span<uint8_t>> dst;
            for (auto& b : bufs) dst.push_back({reinterpret_cast<uint8_t*>(b.data()), b.size()});
            for (const auto& g : (*c)->Load(keys, dst).get()) moved += g.ok() ? int64_t(*g) : 0;
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds)));
    stop = true;
    for (auto& t : ts) t.join();
    return moved / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
  };
  const double save_gbps = drive(true);
  const double load_gbps = drive(false);
  std::printf("| %s | %d | %.0f | %.0f | %.2f | %.2f |\n", absl::GetFlag(FLAGS_label).c_str(), nodes, Pct(lat, 0.5),
              Pct(lat, 0.99), save_gbps, load_gbps);
  return 0;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return kvrecall::Run();
}
