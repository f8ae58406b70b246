// kvrecall-server: one store node. Data plane on UCX (bootstrap port
// --port), control plane on gRPC (--grpc_port), Prometheus on
// --metrics_port. SIGTERM/SIGINT drain it: new requests are refused
// (UNAVAILABLE), requests in flight finish, the SSD tier's log is synced,
// RocksDB is closed, exit 0. Bad flags or unusable paths/ports: a message on
// stderr and exit 2.
//
//   kvrecall-server --host_bytes=1073741824 --ssd_path=/var/lib/kvrecall \
//       --ssd_bytes=107374182400 --admin_token=... --port=7400 --grpc_port=7401
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/env.h"
#include "common/logging.h"
#include "common/ucx_transport.h"
#include "proto/etcd/membership.h"
#include "store/admin_service.h"
#include "store/block_store.h"
#include "store/metrics.h"
#include "store/service.h"

ABSL_FLAG(std::string, bind, "127.0.0.1", "IPv4 address to listen on (all three ports)");
ABSL_FLAG(int, port, 7400, "UCX bootstrap port (0: any free port)");
ABSL_FLAG(int, grpc_port, 7401, "gRPC control-plane port (0: any free port)");
ABSL_FLAG(int, metrics_port, 7402, "Prometheus /metrics port (0: any free port, -1: off)");
ABSL_FLAG(int, workers, 0,
          "threads for attention, row gathers and SSD-tier reads and writes, shared by the progress threads (0: one "
          "per core; -1: none, all on the progress threads)");
ABSL_FLAG(int, progress_threads, 0,
          "UCX progress threads, each with its own worker; clients' connections are spread over them (0: min(cores, 2))");
ABSL_FLAG(uint64_t, host_bytes, 256ull << 20, "host-tier arena bytes");
ABSL_FLAG(bool, prefault_host, true,
          "back the whole host arena with memory at start (fail fast if the machine lacks it; puts then never pay "
          "first-touch page faults)");
ABSL_FLAG(std::string, eviction, "s3fifo", "host-tier eviction: lru or s3fifo");
ABSL_FLAG(double, max_host_block_fraction, 0.25, "blocks larger than this fraction of the host tier go to SSD only");
ABSL_FLAG(std::string, ssd_path, "", "SSD-tier directory (RocksDB); empty: no SSD tier");
ABSL_FLAG(uint64_t, ssd_bytes, 0, "SSD-tier byte budget");
ABSL_FLAG(std::string, ssd_write, "back", "back: demote to SSD on host eviction; through: write every put to SSD");
ABSL_FLAG(std::string, fsync, "durable", "durable: fsync durable puts; always: every SSD write; never");
ABSL_FLAG(std::string, admin_token, "", "admin token for namespace management (default: $KVRECALL_ADMIN_TOKEN)");
ABSL_FLAG(std::string, etcd, "", "etcd gRPC endpoint (host:port) to register in; empty: no registration");
ABSL_FLAG(std::string, etcd_prefix, "/kvrecall/members/", "etcd key prefix of the member list");
ABSL_FLAG(int, etcd_ttl, 5, "etcd lease TTL in seconds (a dead server leaves the member list after this)");
ABSL_FLAG(double, weight, 1.0, "this server's share of the keys (rendezvous weight)");
ABSL_FLAG(std::vector<std::string>, namespace_spec, {},
          "namespaces created at start, name:token:quota_bytes[:salt], comma-separated");

namespace kvrecall {
namespace {

int Usage(const std::string& msg) {
  std::fprintf(stderr, "kvrecall-server: %s\n", msg.c_str());
  return 2;
}

int Main() {
  StoreOptions o;
  o.host_bytes = absl::GetFlag(FLAGS_host_bytes);
  o.prefault_host = absl::GetFlag(FLAGS_prefault_host);
  o.eviction = absl::GetFlag(FLAGS_eviction);
  o.max_host_block_fraction = absl::GetFlag(FLAGS_max_host_block_fraction);
  o.ssd_path = absl::GetFlag(FLAGS_ssd_path);
  o.ssd_bytes = absl::GetFlag(FLAGS_ssd_bytes);
  o.admin_token = absl::GetFlag(FLAGS_admin_token);
  if (o.admin_token.empty() && std::getenv("KVRECALL_ADMIN_TOKEN")) o.admin_token = std::getenv("KVRECALL_ADMIN_TOKEN");
  const std::string ssd_write = absl::GetFlag(FLAGS_ssd_write), fsync = absl::GetFlag(FLAGS_fsync);
  if (ssd_write == "back") o.ssd_write = SsdWritePolicy::kWriteBack;
  else if (ssd_write == "through") o.ssd_write = SsdWritePolicy::kWriteThrough;
  else return Usage("--ssd_write must be back or through");
  if (fsync == "durable") o.fsync = FsyncPolicy::kDurable;
  else if (fsync == "always") o.fsync = FsyncPolicy::kAlways;
  else if (fsync == "never") o.fsync = FsyncPolicy::kNever;
  else return Usage("--fsync must be durable, always or never");
  if (o.host_bytes < (1u << 20)) return Usage("--host_bytes must be at least 1 MiB");
  if (!o.ssd_path.empty() && o.ssd_bytes == 0) return Usage("--ssd_path needs --ssd_bytes");
  if (absl::GetFlag(FLAGS_progress_threads) < 0 || absl::GetFlag(FLAGS_progress_threads) > 64) {
    return Usage("--progress_threads must be 0 (default) to 64");
  }
  std::vector<NamespaceConfig> namespaces;
  for (const std::string& spec : absl::GetFlag(FLAGS_namespace_spec)) {
    std::vector<std::string> f = absl::StrSplit(spec, ':');
    uint64_t quota = 0;
    if (f.size() < 3 || f.size() > 4 || !absl::SimpleAtoi(f[2], &quota)) {
      return Usage(absl::StrCat("--namespace_spec '", spec, "' is not name:token:quota_bytes[:salt]"));
    }
    namespaces.push_back({f[0], f[1], quota, f.size() == 4 ? f[3] : ""});
  }
  absl::StatusOr<std::unique_ptr<BlockStore>> store = BlockStore::Open(o, namespaces);
  if (!store.ok()) return Usage(store.status().ToString());
  StoreService service(store->get(), Env::Default());
  UcxServerOptions uo;
  uo.bind_address = absl::GetFlag(FLAGS_bind);
  uo.port = absl::GetFlag(FLAGS_port);
  uo.workers = absl::GetFlag(FLAGS_workers);
  uo.progress_threads = absl::GetFlag(FLAGS_progress_threads);
  absl::StatusOr<std::unique_ptr<UcxServer>> ucx = UcxServer::Start(&service, uo);
  if (!ucx.ok()) return Usage(ucx.status().ToString());
  // (The arena is registered lazily, by UCX's registration cache on first
  // use of each region: with tcp and shared memory registration pins
  // nothing, and a transport that pins pays it for what is used.)
  BlockStore* s = store->get();
  UcxServer* u = ucx->get();
  std::unique_ptr<EtcdRegistration> registration;
  auto drain = [&service, u, s, &registration] {
    if (registration) registration->Stop();  // leave the member list first
    service.SetDraining(true);
    u->StopAccepting();
    if (absl::Status st = s->Flush(); !st.ok()) KVR_LOG(WARNING) << "drain: " << st;
  };
  AdminService admin(s, &service, o.admin_token, u->address(), drain);
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(absl::StrCat(uo.bind_address, ":", absl::GetFlag(FLAGS_grpc_port)),
                           grpc::InsecureServerCredentials(), &grpc_port);
  builder.RegisterService(&admin);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (!grpc_server || grpc_port == 0) return Usage(absl::StrCat("cannot listen for gRPC on port ", absl::GetFlag(FLAGS_grpc_port)));
  std::unique_ptr<MetricsHttpServer> metrics;
  if (absl::GetFlag(FLAGS_metrics_port) >= 0) {
    auto m = MetricsHttpServer::Start(uo.bind_address, absl::GetFlag(FLAGS_metrics_port),
                                      [&] { return FormatPrometheus(s->Stats(), service.Stats()); });
    if (!m.ok()) return Usage(m.status().ToString());
    metrics = std::move(*m);
  }
  if (!absl::GetFlag(FLAGS_etcd).empty()) {
    auto r = EtcdRegistration::Start(absl::GetFlag(FLAGS_etcd), absl::GetFlag(FLAGS_etcd_prefix) + u->address(),
                                     absl::StrCat(absl::GetFlag(FLAGS_weight)), absl::GetFlag(FLAGS_etcd_ttl));
    if (!r.ok()) return Usage(r.status().ToString());
    registration = std::move(*r);
  }
  std::printf("kvrecall-server ready data=%s grpc=%s:%d metrics=%s host_bytes=%llu ssd=%s\n", u->address().c_str(),
              uo.bind_address.c_str(), grpc_port,
              metrics ? absl::StrCat(uo.bind_address, ":", metrics->port()).c_str() : "off",
              static_cast<unsigned long long>(o.host_bytes), o.ssd_path.empty() ? "none" : o.ssd_path.c_str());
  std::fflush(stdout);

  // Wait for SIGTERM/SIGINT (blocked in every thread, taken here).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  KVR_LOG(INFO) << "signal " << sig << ": draining";
  drain();
  grpc_server->Shutdown();
  u->Shutdown();
  metrics.reset();
  const StoreStats st = s->Stats();
  std::printf("kvrecall-server stopped: %llu puts, %llu gets, %llu host hits, %llu ssd hits, %llu misses\n",
              static_cast<unsigned long long>(st.puts), static_cast<unsigned long long>(st.gets),
              static_cast<unsigned long long>(st.hits_host), static_cast<unsigned long long>(st.hits_ssd),
              static_cast<unsigned long long>(st.misses));
  return 0;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  // Block the stop signals before any thread starts, so only sigwait sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  absl::SetProgramUsageMessage("kvrecall-server: the kvrecall store node (see --help)");
  absl::ParseCommandLine(argc, argv);
  return kvrecall::Main();
}
