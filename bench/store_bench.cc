// Store throughput and latency over UCX on loopback, with the ceiling and a
// peer measured in the same run (issue: store server).
//
//   bazel run -c opt //bench:store_bench -- --out_dir bench/results
//   bazel run -c opt //bench:store_bench -- --transport tcp --block 1MiB --op get
//
// For each UCX transport set (--transport: tcp, shm), block size (64 KiB,
// 1 MiB, 8 MiB) and number of concurrent requesters (1, 4, 16): Put and Get
// throughput (GB/s of block bytes) and p50/p99 latency through the real data
// path (StoreStub -> UCX -> StoreService -> BlockStore host tier; verified
// f16 block containers; the server runs in this process on its own UCX
// worker and progress thread; requesters share one client transport, each
// driving its own lane). Same run: `ucx_perftest` (ucp_am_bw and
// ucp_am_lat at the same size and transport) as the ceiling, and Redis
// (Debian's redis-server on loopback, SET/GET of the same bytes, one
// connection per requester) as the peer. Then the SSD tier: write and read
// throughput of 1 MiB blocks against a plain sequential file of the same
// bytes. With --op, the last line is
//   <op>_gbps <v> ucx_perftest_gbps <v> redis_gbps <v>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/results_io.h"
#include "client/store_stub.h"
#include "codec/codec.h"
#include "codec/random_block.h"
#include "codec/container.h"
#include "common/ucx_transport.h"
#include "store/block_store.h"
#include "store/service.h"
#include "store/ssd_tier.h"

ABSL_FLAG(std::string, transport, "tcp,shm", "UCX transport sets to measure (tcp, shm = shm,self)");
ABSL_FLAG(std::string, block, "64KiB,1MiB,8MiB", "block sizes");
ABSL_FLAG(std::string, concurrency, "1,4,16", "concurrent requesters");
ABSL_FLAG(std::string, op, "", "one op only (put or get): prints the last-line summary");
ABSL_FLAG(double, seconds, 1.5, "measuring time per configuration");
ABSL_FLAG(bool, ssd, true, "also measure the SSD tier against a plain file");
ABSL_FLAG(int, progress_threads, 0, "server progress threads (UcxServerOptions; 0: its default)");
ABSL_FLAG(bool, peers, true, "measure ucx_perftest and Redis too (false: kvrecall alone, for profiling)");
ABSL_FLAG(std::string, out_dir, "", "write store_bench.{md,csv} here (relative to the workspace)");

namespace kvrecall {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t ParseSize(const std::string& s) {
  uint64_t v = 0;
  std::string num = s, unit;
  while (!num.empty() && std::isalpha(static_cast<unsigned char>(num.back()))) unit.insert(unit.begin(), num.back()), num.pop_back();
  if (!absl::SimpleAtoi(num, &v)) return 0;
  if (unit == "KiB") v <<= 10;
  else if (unit == "MiB") v <<= 20;
  else if (unit == "GiB") v <<= 30;
  return v;
}

std::string SizeName(uint64_t b) {
  if (b % (1 << 20) == 0) return absl::StrCat(b >> 20, "MiB");
  return absl::StrCat(b >> 10, "KiB");
}

// A valid f16 block of about `bytes` (1 layer x 8 KV heads x 128 dims = 4 KiB per token).
std::string MakeBlock(uint64_t bytes, uint64_t seed) {
  return RandomF16Block(1, 8, 128, static_cast<int>(std::max<uint64_t>(1, bytes / 4096)), seed);
}

struct Result {
  double gbps = 0, p50_us = 0, p99_us = 0;
  int64_t ops = 0;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

// Runs `op(thread, i)` from `threads` threads for `seconds`; bytes per op.
template <typename Fn>
Result Drive(int threads, double seconds, uint64_t bytes, Fn op) {
  std::vector<std::vector<double>> lat(threads);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> failures{0};
  std::vector<std::thread> ts;
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const auto a = Clock::now();
        if (!op(t, i)) ++failures;
        lat[t].push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  Result r;
  r.ops = static_cast<int64_t>(all.size()) - failures.load();
  r.gbps = r.ops * double(bytes) / wall / 1e9;
  r.p50_us = Percentile(all, 0.5);
  r.p99_us = Percentile(all, 0.99);
  if (failures.load() > 0) std::fprintf(stderr, "  (%lld failed ops)\n", static_cast<long long>(failures.load()));
  return r;
}

// --- ucx_perftest ---------------------------------------------------------

// The "Final:" line's numbers from a ucx_perftest client run.
std::vector<double> PerftestFinal(const std::string& tls, const std::string& test, uint64_t size, int iters) {
  static int port = 13500;
  ++port;
  // The same UCX settings kvrecall's transport applies (UcxTuning), so the
  // ceiling is measured with them too.
  std::string env = absl::StrCat("UCX_TLS=", tls, " UCX_NET_DEVICES=lo ");
  for (const auto& [name, value] : UcxTuning(tls)) absl::StrAppend(&env, "UCX_", name, "=", value, " ");
  const std::string server = absl::StrCat(env, "timeout 60 ucx_perftest -p ", port, " >/dev/null 2>&1 &");
  if (std::system(server.c_str()) != 0) return {};
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  const std::string client = absl::StrCat(env, "timeout 60 ucx_perftest -p ", port, " -t ", test, " -s ", size, " -n ",
                                          iters, " 127.0.0.1 2>&1");
  FILE* p = popen(client.c_str(), "r");
  std::vector<double> out;
  char line[512];
  while (p && fgets(line, sizeof(line), p)) {
    if (std::strncmp(line, "Final:", 6) != 0) continue;
    for (absl::string_view f : absl::StrSplit(line + 6, ' ', absl::SkipWhitespace())) {
      double v;
      if (absl::SimpleAtod(f, &v)) out.push_back(v);
    }
  }
  if (p) pclose(p);
  return out;  // iterations, lat p50, lat avg, lat overall, MB/s avg, MB/s overall, msg/s avg, msg/s overall
}

// --- Redis peer (RESP over a plain socket) -------------------------------

class Redis {
 public:
  bool Start() {
    port_ = 16379 + getpid() % 1000;
    const std::string cmd = absl::StrCat("redis-server --port ", port_,
                                         " --save '' --appendonly no --protected-mode no --daemonize yes"
                                         " --pidfile /tmp/kvrecall_bench_redis.pid --logfile /dev/null");
    if (std::system(cmd.c_str()) != 0) return false;
    for (int i = 0; i < 50; ++i) {
      const int fd = Connect();
      if (fd >= 0) {
        close(fd);
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  ~Redis() {
    if (port_) (void)!std::system("kill $(cat /tmp/kvrecall_bench_redis.pid) 2>/dev/null");
  }
  int Connect() const {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port_));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      close(fd);
      return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
  }
  static bool Send(int fd, const std::string& a, const std::string& b, const char* tail = "") {
    return SendAll(fd, a.data(), a.size()) && SendAll(fd, b.data(), b.size()) && SendAll(fd, tail, std::strlen(tail));
  }
  static bool SendAll(int fd, const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w, n -= size_t(w);
    }
    return true;
  }
  // Reads one RESP reply; bulk strings into *value (the bytes a client gets).
  static bool Reply(int fd, std::string* buf, std::string* value) {
    auto fill = [&](size_t need) {
      char tmp[1 << 16];
      while (buf->size() < need) {
        const ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
        if (r <= 0) return false;
        buf->append(tmp, size_t(r));
      }
      return true;
    };
    size_t eol;
    while ((eol = buf->find("\r\n")) == std::string::npos) {
      if (!fill(buf->size() + 1)) return false;
    }
    const std::string head = buf->substr(0, eol);
    buf->erase(0, eol + 2);
    if (head[0] != '$') return head[0] == '+';
    long long n = std::atoll(head.c_str() + 1);
    if (n < 0) return false;
    if (!fill(size_t(n) + 2)) return false;
    if (value) value->assign(buf->data(), size_t(n));
    buf->erase(0, size_t(n) + 2);
    return true;
  }
  int port_ = 0;
};

// --- SSD tier vs a plain file --------------------------------------------

struct SsdResult {
  double tier_write = 0, tier_read = 0, file_write = 0, file_read = 0;
};

SsdResult MeasureSsd(const std::string& dir) {
  SsdResult r;
  const int n = 256;
  const std::string blk = MakeBlock(1 << 20, 42);
  (void)std::system(absl::StrCat("rm -rf ", dir, " && mkdir -p ", dir).c_str());
  {
    auto t = SsdTier::Open({dir + "/tier", uint64_t(n + 8) * blk.size()});
    if (!t.ok()) return r;
    auto a = Clock::now();
    for (int i = 0; i < n; ++i) (void)(*t)->Put({1, BlockKey{uint64_t(i), 0}}, AsBytes(blk), false);
    (void)(*t)->Flush();
    r.tier_write = double(n) * blk.size() / std::chrono::duration<double>(Clock::now() - a).count() / 1e9;
    (void)!std::system("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null");
    a = Clock::now();
    size_t got = 0;
    for (int i = 0; i < n; ++i) {
      auto v = (*t)->Get({1, BlockKey{uint64_t(i), 0}});
      if (v.ok() && ParseBlock(AsBytes(*v)).ok()) got += v->size();
    }
    r.tier_read = double(got) / std::chrono::duration<double>(Clock::now() - a).count() / 1e9;
  }
  {
    const std::string path = dir + "/plain.bin";
    auto a = Clock::now();
    FILE* f = std::fopen(path.c_str(), "wb");
    for (int i = 0; i < n; ++i) std::fwrite(blk.data(), 1, blk.size(), f);
    std::fflush(f);
    fsync(fileno(f));
    std::fclose(f);
    r.file_write = double(n) * blk.size() / std::chrono::duration<double>(Clock::now() - a).count() / 1e9;
    (void)!std::system("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null");
    std::string buf(blk.size(), '\0');
    a = Clock::now();
    f = std::fopen(path.c_str(), "rb");
    size_t got = 0;
    for (int i = 0; i < n; ++i) got += std::fread(buf.data(), 1, buf.size(), f);
    std::fclose(f);
    r.file_read = double(got) / std::chrono::duration<double>(Clock::now() - a).count() / 1e9;
  }
  (void)std::system(absl::StrCat("rm -rf ", dir).c_str());
  return r;
}

std::vector<std::string> List(const std::string& s) { return absl::StrSplit(s, ',', absl::SkipEmpty()); }

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  using namespace kvrecall;
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  const double secs = absl::GetFlag(FLAGS_seconds);
  std::vector<std::string> ops = {"put", "get"};
  if (!absl::GetFlag(FLAGS_op).empty()) ops = {absl::GetFlag(FLAGS_op)};
  std::vector<uint64_t> sizes;
  for (const auto& s : List(absl::GetFlag(FLAGS_block))) sizes.push_back(ParseSize(s));
  std::vector<int> conc;
  for (const auto& c : List(absl::GetFlag(FLAGS_concurrency))) conc.push_back(std::atoi(c.c_str()));

  Redis redis;
  const bool peers = absl::GetFlag(FLAGS_peers);
  const bool have_redis = peers && redis.Start();
  if (peers && !have_redis) std::fprintf(stderr, "redis-server did not start: no peer numbers\n");

  std::string md =
      "| transport | block | op | requesters | kvrecall GB/s | p50 µs | p99 µs | ucx_perftest GB/s | ucx_perftest lat µs | "
      "redis GB/s | redis p50 µs | redis p99 µs | kvrecall / perftest | kvrecall / redis |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::string csv = "transport,block,op,requesters,gbps,p50_us,p99_us,perftest_gbps,perftest_lat_us,redis_gbps,redis_p50_us,redis_p99_us\n";
  double last_gbps = 0, last_perf = 0, last_redis = 0;

  for (const std::string& tname : List(absl::GetFlag(FLAGS_transport))) {
    const std::string tls = tname == "shm" ? "shm,self" : tname;
    setenv("UCX_TLS", tls.c_str(), 1);
    setenv("UCX_NET_DEVICES", "lo", 1);
    StoreOptions o;
    o.host_bytes = 1ull << 30;
    o.eviction = "lru";
    o.prefault_host = true;  // as kvrecall-server does by default
    o.admin_token = "bench-admin";
    auto store = BlockStore::Open(o, {{"bench", "bench-token-1", 1ull << 30, ""}});
    StoreService service(store->get(), Env::Default());
    UcxServerOptions so;
    so.progress_threads = absl::GetFlag(FLAGS_progress_threads);
    auto server = UcxServer::Start(&service, so);
    if (!server.ok()) {
      std::fprintf(stderr, "UCX server on %s: %s\n", tls.c_str(), server.status().ToString().c_str());
      continue;
    }
    auto client = ConnectUcx((*server)->address());
    if (!client.ok()) {
      std::fprintf(stderr, "UCX client on %s: %s\n", tls.c_str(), client.status().ToString().c_str());
      continue;
    }
    StoreStub stub(client->get(), "bench-token-1", absl::Seconds(30));
    for (uint64_t size : sizes) {
      const int nkeys = static_cast<int>(std::max<uint64_t>(4, std::min<uint64_t>(64, (256ull << 20) / size)));
      std::vector<std::string> blocks;
      for (int i = 0; i < 4; ++i) blocks.push_back(MakeBlock(size, i));
      const uint64_t bytes = blocks[0].size();
      // Populate for gets.
      for (int k = 0; k < nkeys; ++k) {
        const BlockKey key{uint64_t(k), size};
        (void)stub.Put({&key, 1}, {AsBytes(blocks[k % 4])}, false);
      }
      const int perf_iters = size >= (8 << 20) ? 100 : size >= (1 << 20) ? 500 : 5000;
      const std::vector<double> bw = peers ? PerftestFinal(tls, "ucp_am_bw", size, perf_iters) : std::vector<double>{};
      const std::vector<double> lat = peers ? PerftestFinal(tls, "ucp_am_lat", size, perf_iters) : std::vector<double>{};
      const double perf_gbps = bw.size() >= 6 ? bw[5] * 1e6 / 1e9 * 1.048576 : 0;  // MB/s is MiB/s
      const double perf_lat = lat.size() >= 3 ? lat[2] : 0;
      for (const std::string& op : ops) {
        for (int c : conc) {
          std::fprintf(stderr, "[store_bench] %s %s %s x%d\n", tname.c_str(), SizeName(size).c_str(), op.c_str(), c);
          std::vector<std::string> bufs(c, std::string(bytes, '\0'));
          Result r = Drive(c, secs, bytes, [&](int t, int64_t i) {
            const BlockKey key{uint64_t((t * 7919 + i) % nkeys), size};
            if (op == "put") {
              auto p = stub.Put({&key, 1}, {AsBytes(blocks[i % 4])}, false);
              return p.ok() && (*p)[0].ok();
            }
            MutableIov dst = {{reinterpret_cast<uint8_t*>(bufs[t].data()), bufs[t].size()}};
            auto g = stub.Get({&key, 1}, dst);
            return g.ok() && (*g)[0].ok();
          });
          Result rr;
          if (have_redis) {
            std::vector<int> fds(c);
            for (int& fd : fds) fd = redis.Connect();
            for (int k = 0; k < nkeys; ++k) {  // populate
              std::string buf;
              const std::string key = absl::StrCat("k", k, "_", size);
              Redis::Send(fds[0], absl::StrCat("*3\r\n$3\r\nSET\r\n$", key.size(), "\r\n", key, "\r\n$", bytes, "\r\n"),
                          blocks[k % 4], "\r\n");
              Redis::Reply(fds[0], &buf, nullptr);
            }
            std::vector<std::string> rbufs(c);
            rr = Drive(c, secs, bytes, [&](int t, int64_t i) {
              const std::string key = absl::StrCat("k", (t * 7919 + i) % nkeys, "_", size);
              if (op == "put") {
                if (!Redis::Send(fds[t], absl::StrCat("*3\r\n$3\r\nSET\r\n$", key.size(), "\r\n", key, "\r\n$", bytes, "\r\n"),
                                 blocks[i % 4], "\r\n")) return false;
                return Redis::Reply(fds[t], &rbufs[t], nullptr);
              }
              std::string value;
              if (!Redis::Send(fds[t], absl::StrCat("*2\r\n$3\r\nGET\r\n$", key.size(), "\r\n", key, "\r\n"), "")) return false;
              return Redis::Reply(fds[t], &rbufs[t], &value) && value.size() == bytes;
            });
            for (int fd : fds) close(fd);
          }
          absl::StrAppend(&md, absl::StrFormat("| %s | %s | %s | %d | %.2f | %.0f | %.0f | %.2f | %.0f | %.2f | %.0f | %.0f | %.2f | %.2f |\n",
                                               tname, SizeName(size), op, c, r.gbps, r.p50_us, r.p99_us, perf_gbps, perf_lat,
                                               rr.gbps, rr.p50_us, rr.p99_us, perf_gbps > 0 ? r.gbps / perf_gbps : 0,
                                               rr.gbps > 0 ? r.gbps / rr.gbps : 0));
          absl::StrAppend(&csv, absl::StrFormat("%s,%s,%s,%d,%.4f,%.1f,%.1f,%.4f,%.1f,%.4f,%.1f,%.1f\n", tname, SizeName(size),
                                                op, c, r.gbps, r.p50_us, r.p99_us, perf_gbps, perf_lat, rr.gbps, rr.p50_us,
                                                rr.p99_us));
          last_gbps = r.gbps, last_perf = perf_gbps, last_redis = rr.gbps;
        }
      }
      for (int k = 0; k < nkeys; ++k) {  // keep the arena for the next size
        const BlockKey key{uint64_t(k), size};
        (void)stub.Delete({&key, 1});
      }
    }
    client->reset();
    (*server)->Shutdown();
  }
  if (absl::GetFlag(FLAGS_ssd) && absl::GetFlag(FLAGS_op).empty()) {
    const char* tmp = std::getenv("TMPDIR");
    const SsdResult s = MeasureSsd(absl::StrCat(tmp ? tmp : "/tmp", "/kvrecall_ssd_bench"));
    absl::StrAppend(&md, absl::StrFormat("\n**SSD tier** (256 x 1 MiB blocks; RocksDB with blob files, WAL synced once at the end; "
                                         "reads verify each block; page cache dropped between write and read where permitted):\n\n"
                                         "| | write GB/s | read GB/s |\n|---|---|---|\n| SSD tier | %.2f | %.2f |\n"
                                         "| plain sequential file (fwrite + fsync, fread) | %.2f | %.2f |\n"
                                         "| tier / file | %.2f | %.2f |\n",
                                         s.tier_write, s.tier_read, s.file_write, s.file_read,
                                         s.file_write > 0 ? s.tier_write / s.file_write : 0,
                                         s.file_read > 0 ? s.tier_read / s.file_read : 0));
  }
  std::printf("%s", md.c_str());
  if (!WriteResults(absl::GetFlag(FLAGS_out_dir), "store_bench", md, csv)) {
    std::fprintf(stderr, "cannot write results to %s\n", absl::GetFlag(FLAGS_out_dir).c_str());
    return 1;
  }
  if (!absl::GetFlag(FLAGS_op).empty()) {
    std::printf("%s_gbps %.3f ucx_perftest_gbps %.3f redis_gbps %.3f\n", absl::GetFlag(FLAGS_op).c_str(), last_gbps,
                last_perf, last_redis);
  }
  return 0;
}
