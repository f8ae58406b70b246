#include "store/ssd_tier.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rocksdb/db.h>

namespace kvrecall {
namespace {

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/" + name + "_" + std::to_string(getpid());
  std::string cmd = "rm -rf '" + dir + "'";
  (void)std::system(cmd.c_str());
  return dir;
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string Payload(uint64_t id, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((id * 131 + i * 7) & 0xff);
  return s;
}

TEST(SsdTier, PutGetReplaceDeleteAndReopen) {
  const std::string dir = TempDir("ssd_basic");
  {
    auto t = SsdTier::Open({dir, 1 << 20});
    ASSERT_TRUE(t.ok()) << t.status();
    for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE((*t)->Put({1, BlockKey{i, 9}}, Bytes(Payload(i, 10000)), false).ok());
    auto got = (*t)->Get({1, BlockKey{3, 9}});
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, Payload(3, 10000));
    EXPECT_EQ((*t)->Get({2, BlockKey{3, 9}}).status().code(), absl::StatusCode::kNotFound);  // other namespace
    ASSERT_TRUE((*t)->Put({1, BlockKey{3, 9}}, Bytes(Payload(33, 5000)), true).ok());  // replace
    EXPECT_EQ((*t)->stats().bytes, 9 * 10000u + 5000u);
    ASSERT_TRUE((*t)->Delete({1, BlockKey{4, 9}}).ok());
    ASSERT_TRUE((*t)->Delete({1, BlockKey{4, 9}}).ok());  // absent: still OK
    EXPECT_EQ((*t)->stats().blocks, 9u);
  }
  auto t = SsdTier::Open({dir, 1 << 20});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->stats().blocks, 9u);
  EXPECT_EQ((*t)->stats().bytes, 8 * 10000u + 5000u);
  EXPECT_EQ(*(*t)->Get({1, BlockKey{3, 9}}), Payload(33, 5000));
  ASSERT_TRUE((*t)->DeleteNamespace(1).ok());
  EXPECT_EQ((*t)->stats().blocks, 0u);
  EXPECT_FALSE((*t)->Contains({1, BlockKey{0, 9}}));
}

TEST(SsdTier, BudgetEvictsOldestFirst) {
  auto t = SsdTier::Open({TempDir("ssd_budget"), 50000});
  ASSERT_TRUE(t.ok());
  for (uint64_t i = 0; i < 12; ++i) ASSERT_TRUE((*t)->Put({0, BlockKey{i, 0}}, Bytes(Payload(i, 10000)), false).ok());
  const SsdTierStats s = (*t)->stats();
  EXPECT_LE(s.bytes, 50000u);
  EXPECT_EQ(s.blocks, 5u);
  EXPECT_EQ(s.evictions, 7u);
  for (uint64_t i = 0; i < 7; ++i) EXPECT_FALSE((*t)->Contains({0, BlockKey{i, 0}})) << i;
  for (uint64_t i = 7; i < 12; ++i) EXPECT_EQ(*(*t)->Get({0, BlockKey{i, 0}}), Payload(i, 10000));
  EXPECT_EQ((*t)->Put({0, BlockKey{99, 0}}, Bytes(Payload(0, 60000)), false).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(SsdTier::Open({"", 10}).ok());
  EXPECT_FALSE(SsdTier::Open({"/proc/no/such/dir", 10}).ok());
}

std::string RawKey(uint32_t ns, const BlockKey& k) {  // the tier's 20-byte key layout
  std::string s(20, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(ns >> (24 - 8 * i));
  for (int i = 0; i < 8; ++i) s[4 + i] = static_cast<char>(k.hi >> (56 - 8 * i));
  for (int i = 0; i < 8; ++i) s[12 + i] = static_cast<char>(k.lo >> (56 - 8 * i));
  return s;
}

// Reads do not recompute RocksDB's record CRC; the key trailer must still
// refuse a record that is intact but is another key's (what a misdirected
// index entry would return), and a truncated one.
TEST(SsdTier, RecordOfAnotherKeyIsRefused) {
  const std::string dir = TempDir("ssd_misdirect");
  {
    auto t = SsdTier::Open({dir, 1 << 20});
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->Put({1, BlockKey{1, 1}}, Bytes(Payload(1, 9000)), true).ok());
    ASSERT_TRUE((*t)->Put({1, BlockKey{2, 1}}, Bytes(Payload(2, 9000)), true).ok());
    ASSERT_TRUE((*t)->Put({1, BlockKey{3, 1}}, Bytes(Payload(3, 9000)), true).ok());
    ASSERT_TRUE((*t)->Flush().ok());
  }
  {
    rocksdb::Options o;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{rocksdb::kDefaultColumnFamilyName, {}},
                                                        {"data", {}}, {"meta", {}}, {"order", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> h;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir, cfs, &h, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string v;
    ASSERT_TRUE(db->Get({}, h[1], RawKey(1, {1, 1}), &v).ok());
    EXPECT_EQ(v.substr(0, 9000), Payload(1, 9000));
    ASSERT_TRUE(db->Put({}, h[1], RawKey(1, {2, 1}), v).ok());                   // block 1's record under key 2
    ASSERT_TRUE(db->Put({}, h[1], RawKey(1, {3, 1}), v.substr(0, 9000)).ok());  // no trailer
    for (auto* c : h) ASSERT_TRUE(db->DestroyColumnFamilyHandle(c).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  auto t = SsdTier::Open({dir, 1 << 20});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*(*t)->Get({1, BlockKey{1, 1}}), Payload(1, 9000));
  EXPECT_EQ((*t)->Get({1, BlockKey{2, 1}}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ((*t)->Get({1, BlockKey{3, 1}}).status().code(), absl::StatusCode::kDataLoss);
}

// A child process puts blocks with sync=true and reports each acknowledged
// key on a pipe; the parent kills it with SIGKILL mid-stream, reopens the
// tier and checks that every acknowledged block is there, byte for byte.
TEST(SsdTier, SyncedPutsSurviveKill9) {
  const std::string dir = TempDir("ssd_crash");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    auto t = SsdTier::Open({dir, 64 << 20});
    if (!t.ok()) _exit(2);
    for (uint64_t i = 0;; ++i) {
      if (!(*t)->Put({0, BlockKey{i, 1}}, Bytes(Payload(i, 20000 + i % 5000)), true).ok()) _exit(3);
      if (write(fds[1], &i, sizeof(i)) != sizeof(i)) _exit(4);
    }
  }
  close(fds[1]);
  std::vector<uint64_t> acked;
  uint64_t id;
  while (acked.size() < 200 && read(fds[0], &id, sizeof(id)) == sizeof(id)) acked.push_back(id);
  kill(pid, SIGKILL);
  while (read(fds[0], &id, sizeof(id)) == sizeof(id)) acked.push_back(id);  // acks already in the pipe
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  ASSERT_GE(acked.size(), 200u);
  auto t = SsdTier::Open({dir, 64 << 20});
  ASSERT_TRUE(t.ok()) << t.status();
  for (uint64_t i : acked) {
    auto got = (*t)->Get({0, BlockKey{i, 1}});
    ASSERT_TRUE(got.ok()) << "acknowledged block " << i << " lost: " << got.status();
    ASSERT_EQ(*got, Payload(i, 20000 + i % 5000)) << i;
  }
  EXPECT_GE((*t)->stats().blocks, acked.size());
}

}  // namespace
}  // namespace kvrecall
