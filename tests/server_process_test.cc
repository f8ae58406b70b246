// kvrecall-server as a real process on loopback: gRPC control plane, UCX data
// plane, /metrics, SIGTERM drain, and kill -9 in the middle of a stream of
// durable puts (every acknowledged block must read back identical after a
// restart; nothing corrupted is served).
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/store_stub.h"
#include "codec/codec.h"
#include "codec/random_block.h"
#include "codec/container.h"
#include "common/ucx_transport.h"
#include "proto/kvrecall/v1/admin.grpc.pb.h"
#include "tests/server_process.h"

namespace kvrecall {
namespace {

constexpr char kToken[] = "tenant-token-1234";

std::string MakeBlock(int tokens, uint64_t seed) {
  return RandomF16Block(2, 2, 64, tokens, seed);
}


TEST(ServerProcess, ControlPlaneDataPlaneMetricsAndDrain) {
  Server s;
  ASSERT_TRUE(s.Start({})) << "server did not come up";
  auto channel = grpc::CreateChannel(s.grpc, grpc::InsecureChannelCredentials());
  auto admin = v1::Admin::NewStub(channel);
  {
    grpc::ClientContext ctx;
    v1::HealthResponse h;
    ASSERT_TRUE(admin->Health(&ctx, {}, &h).ok());
    EXPECT_EQ(h.state(), v1::HealthResponse::SERVING);
    EXPECT_EQ(h.data_address(), s.data);
  }
  v1::CreateNamespaceRequest cr;
  cr.set_name("tenant"), cr.set_token(kToken), cr.set_quota_bytes(4 << 20), cr.set_salt("s");
  {
    grpc::ClientContext ctx;  // no admin token
    v1::CreateNamespaceResponse r;
    EXPECT_EQ(admin->CreateNamespace(&ctx, cr, &r).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("kvrecall-admin-token", kAdmin);
    v1::CreateNamespaceResponse r;
    ASSERT_TRUE(admin->CreateNamespace(&ctx, cr, &r).ok());
  }
  auto t = ConnectUcx(s.data);
  ASSERT_TRUE(t.ok()) << t.status();
  StoreStub stub(t->get(), kToken);
  std::vector<std::string> blocks;
  std::vector<BlockKey> keys;
  ConstIov iov;
  for (int i = 0; i < 8; ++i) blocks.push_back(MakeBlock(64, i)), keys.push_back({uint64_t(i), 77});
  for (const auto& b : blocks) iov.push_back(AsBytes(b));
  auto put = stub.Put(keys, iov, false);
  ASSERT_TRUE(put.ok()) << put.status();
  for (const auto& st : *put) EXPECT_TRUE(st.ok()) << st;
  std::vector<std::string> bufs(8, std::string(1 << 17, '\0'));
  MutableIov dst;
  for (auto& b : bufs) dst.push_back({reinterpret_cast<uint8_t*>(b.data()), b.size()});
  auto got = stub.Get(keys, dst);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE((*got)[i].ok()) << (*got)[i].status();
    EXPECT_EQ(bufs[i].substr(0, *(*got)[i]), blocks[i]);
  }
  StoreStub wrong(t->get(), "nope-nope-nope");
  EXPECT_EQ(wrong.Exists(keys).status().code(), absl::StatusCode::kPermissionDenied);
  {
    grpc::ClientContext ctx;
    v1::StatsResponse st;
    ASSERT_TRUE(admin->Stats(&ctx, {}, &st).ok());
    EXPECT_EQ(st.puts(), 8u);
    EXPECT_EQ(st.hits_host(), 8u);
    EXPECT_GE(st.rejected_requests(), 1u);
    EXPECT_EQ(st.latency().at("get").count(), 1u);
    ASSERT_EQ(st.namespaces_size(), 1);
    EXPECT_GT(st.namespaces(0).host_bytes(), 0u);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("kvrecall-token", kToken);
    v1::PinRequest pr;
    pr.add_keys(std::string(reinterpret_cast<const char*>(&keys[0]), 16));
    pr.add_keys(std::string(16, '\x01'));
    v1::PinResponse resp;
    ASSERT_TRUE(admin->Pin(&ctx, pr, &resp).ok());
    EXPECT_EQ(resp.codes(0), 0);
    EXPECT_EQ(resp.codes(1), int(absl::StatusCode::kNotFound));
  }
  const std::string m = HttpGet(s.metrics, "/metrics");
  EXPECT_NE(m.find("200 OK"), std::string::npos);
  EXPECT_NE(m.find("kvrecall_puts_total 8"), std::string::npos) << m.substr(0, 400);
  EXPECT_NE(m.find("kvrecall_request_seconds_count{op=\"put\"} 1"), std::string::npos);
  EXPECT_NE(HttpGet(s.metrics, "/other").find("404"), std::string::npos);
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("kvrecall-admin-token", kAdmin);
    v1::DrainResponse r;
    ASSERT_TRUE(admin->Drain(&ctx, {}, &r).ok());
  }
  EXPECT_EQ(stub.Exists(keys).status().code(), absl::StatusCode::kUnavailable);  // drained
  {
    grpc::ClientContext ctx;
    v1::HealthResponse h;
    ASSERT_TRUE(admin->Health(&ctx, {}, &h).ok());
    EXPECT_EQ(h.state(), v1::HealthResponse::DRAINING);
  }
  const int status = s.Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(ServerProcess, Kill9DuringDurablePutsLosesNothingAcknowledged) {
  const std::string dir = TempDir("server_crash");
  const std::vector<std::string> flags = {absl::StrCat("--ssd_path=", dir), "--ssd_bytes=268435456",
                                          absl::StrCat("--namespace_spec=tenant:", kToken, ":8388608")};
  std::vector<std::string> blocks;
  for (int i = 0; i < 16; ++i) blocks.push_back(MakeBlock(32 + i, 100 + i));
  std::vector<uint64_t> acked;
  {
    Server s;
    ASSERT_TRUE(s.Start(flags));
    auto t = ConnectUcx(s.data);
    ASSERT_TRUE(t.ok());
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      StoreStub stub(t->get(), kToken, absl::Seconds(2));
      for (uint64_t i = 0; !stop; ++i) {
        const BlockKey k{i, 5};
        auto r = stub.Put({&k, 1}, {AsBytes(blocks[i % 16])}, /*durable=*/true);
        if (r.ok() && (*r)[0].ok()) acked.push_back(i);
        if (!r.ok()) break;  // the server is gone
      }
    });
    while (acked.size() < 100) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    s.Stop(SIGKILL);  // mid-stream
    stop = true;
    writer.join();
  }
  ASSERT_GE(acked.size(), 100u);
  Server s;
  ASSERT_TRUE(s.Start(flags));
  auto t = ConnectUcx(s.data);
  ASSERT_TRUE(t.ok());
  StoreStub stub(t->get(), kToken);
  std::string buf(1 << 17, '\0');
  MutableIov dst = {{reinterpret_cast<uint8_t*>(buf.data()), buf.size()}};
  for (uint64_t i : acked) {
    const BlockKey k{i, 5};
    auto got = stub.Get({&k, 1}, dst);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE((*got)[0].ok()) << "acknowledged durable block " << i << ": " << (*got)[0].status();
    ASSERT_EQ(buf.substr(0, *(*got)[0]), blocks[i % 16]) << i;
  }
  // Whatever else is there (puts in flight at the kill) is whole or absent.
  const uint64_t last = acked.back();
  for (uint64_t i = last + 1; i < last + 4; ++i) {
    const BlockKey k{i, 5};
    auto got = stub.Get({&k, 1}, dst);
    ASSERT_TRUE(got.ok());
    if ((*got)[0].ok()) EXPECT_EQ(buf.substr(0, *(*got)[0]), blocks[i % 16]);
  }
  EXPECT_TRUE(WIFEXITED(s.Stop(SIGTERM)));
}

// Three times the host budget goes in; the process grows by at most the
// budget plus a bounded overhead, and recent blocks keep hitting. With the
// arena backed at start (the default) it is all there before the first put
// and the process grows by the overhead only.
// Bad flags or an unusable port: exit code 2 and a message naming the
// problem, before anything listens.
TEST(ServerProcess, BadFlagsExitNonZeroWithAClearMessage) {
  Server busy;  // holds a data port the second server then asks for
  ASSERT_TRUE(busy.Start({}));
  const std::string busy_port = busy.data.substr(busy.data.rfind(':') + 1);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--host_bytes=1000", "--host_bytes must be at least 1 MiB"},
      {"--eviction=fifo", "eviction"},
      {"--progress_threads=-1", "--progress_threads must be"},
      {"--ssd_write=sideways", "--ssd_write must be back or through"},
      {"--ssd_path=/tmp/x --ssd_bytes=0", "--ssd_path needs --ssd_bytes"},
      {absl::StrCat("--port=", busy_port), "cannot listen"},
  };
  for (const auto& [flags, message] : cases) {
    const std::string cmd = absl::StrCat(ServerBinary(), " --grpc_port=0 --metrics_port=0 --admin_token=x ", flags,
                                         " 2>&1; echo \"exit=$?\"");
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    pclose(p);
    EXPECT_NE(out.find("exit=2"), std::string::npos) << flags << ": " << out;
    EXPECT_NE(out.find(message), std::string::npos) << flags << ": " << out;
    EXPECT_EQ(out.find("kvrecall-server ready"), std::string::npos) << flags << ": " << out;
  }
}

TEST(ServerProcess, MemoryStaysWithinTheHostBudget) {
  for (const bool prefault : {false, true}) {
    SCOPED_TRACE(prefault ? "--prefault_host" : "--noprefault_host");
    Server s;
    const uint64_t budget = 16 << 20;
    ASSERT_TRUE(
        s.Start({absl::StrCat("--host_bytes=", budget), absl::StrCat("--namespace_spec=tenant:", kToken, ":", budget),
                 absl::StrCat("--prefault_host=", prefault)}));
    auto t = ConnectUcx(s.data);
    ASSERT_TRUE(t.ok());
    StoreStub stub(t->get(), kToken);
    const std::string blk = MakeBlock(64, 3);  // ~64 KiB
    {  // warm the data path before the baseline
      const BlockKey k{999999, 1};
      ASSERT_TRUE(stub.Put({&k, 1}, {AsBytes(blk)}, false).ok());
    }
    const uint64_t before = RssBytes(s.pid);
    const int n = static_cast<int>(3 * budget / blk.size());
    std::string buf(1 << 17, '\0');
    MutableIov dst = {{reinterpret_cast<uint8_t*>(buf.data()), buf.size()}};
    for (int i = 0; i < n; ++i) {
      const BlockKey k{uint64_t(i), 1};
      auto p = stub.Put({&k, 1}, {AsBytes(blk)}, false);
      ASSERT_TRUE(p.ok() && (*p)[0].ok()) << i;
      if (i >= 8) {
        const BlockKey recent{uint64_t(i - 5), 1};
        auto g = stub.Get({&recent, 1}, dst);
        ASSERT_TRUE(g.ok() && (*g)[0].ok()) << "recent block " << i - 5 << " missed";
      }
    }
    const uint64_t after = RssBytes(s.pid);
    // Documented overhead: per-block metadata (~200 B x blocks), UCX and gRPC
    // buffers; 8 MiB covers it with room.
    if (prefault) EXPECT_GE(before, budget) << "the arena is backed before the first put";
    EXPECT_LE(after, before + (prefault ? 0 : budget) + (8 << 20)) << "RSS grew from " << before << " to " << after;
    std::printf("RSS %llu -> %llu bytes for %d x %zu-byte puts into a %llu-byte host tier (prefault %d)\n",
                static_cast<unsigned long long>(before), static_cast<unsigned long long>(after), n, blk.size(),
                static_cast<unsigned long long>(budget), int(prefault));
    EXPECT_TRUE(WIFEXITED(s.Stop(SIGTERM)));
  }
}

// The SSD fills up (files may not grow past 1 MiB): durable puts start
// failing with a clear error, the server stays up, and what was stored
// before still reads back identical.
TEST(ServerProcess, DiskFullFailsPutsNotTheServer) {
  const std::string dir = TempDir("server_disk_full");
  Server s;
  ASSERT_TRUE(s.Start({absl::StrCat("--ssd_path=", dir), "--ssd_bytes=268435456",
                       absl::StrCat("--namespace_spec=tenant:", kToken, ":8388608")},
                      /*file_limit=*/1 << 20));
  auto t = ConnectUcx(s.data);
  ASSERT_TRUE(t.ok());
  StoreStub stub(t->get(), kToken);
  const std::string blk = MakeBlock(32, 8);  // ~32 KiB
  std::vector<uint64_t> stored;
  int failed = 0;
  for (uint64_t i = 0; i < 100; ++i) {
    const BlockKey k{i, 9};
    auto p = stub.Put({&k, 1}, {AsBytes(blk)}, /*durable=*/true);
    ASSERT_TRUE(p.ok()) << "the server must answer: " << p.status();
    if ((*p)[0].ok()) {
      stored.push_back(i);
    } else {
      ++failed;
    }
  }
  EXPECT_GT(failed, 0) << "the file-size limit never hit";
  EXPECT_GT(stored.size(), 0u);
  auto channel = grpc::CreateChannel(s.grpc, grpc::InsecureChannelCredentials());
  grpc::ClientContext ctx;
  v1::HealthResponse h;
  ASSERT_TRUE(v1::Admin::NewStub(channel)->Health(&ctx, {}, &h).ok());
  std::string buf(1 << 16, '\0');
  MutableIov dst = {{reinterpret_cast<uint8_t*>(buf.data()), buf.size()}};
  for (uint64_t i : stored) {
    const BlockKey k{i, 9};
    auto g = stub.Get({&k, 1}, dst);
    ASSERT_TRUE(g.ok());
    ASSERT_TRUE((*g)[0].ok()) << i << ": " << (*g)[0].status();
    EXPECT_EQ(buf.substr(0, *(*g)[0]), blk);
  }
  EXPECT_TRUE(WIFEXITED(s.Stop(SIGTERM)));
}

}  // namespace
}  // namespace kvrecall
