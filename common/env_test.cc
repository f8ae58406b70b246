#include "common/env.h"

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "common/fault_env.h"

namespace kvrecall {
namespace {

// The same contract, checked on the POSIX Env (under $TEST_TMPDIR) and MemEnv.
class EnvContract : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      env_ = Env::Default();
      const char* t = std::getenv("TEST_TMPDIR");
      root_ = std::string(t ? t : "/tmp") + "/env_contract";
    } else {
      mem_ = NewMemEnv(7);
      env_ = mem_.get();
      root_ = "/mem/env_contract";
    }
    ASSERT_TRUE(env_->CreateDir(root_).ok());
  }
  Env* env_ = nullptr;
  std::unique_ptr<MemEnv> mem_;
  std::string root_;
};

TEST_P(EnvContract, WriteReadAppendRenameDelete) {
  const std::string a = root_ + "/a", b = root_ + "/b";
  ASSERT_TRUE(WriteStringToFile(env_, "hello", a, true).ok());
  EXPECT_TRUE(env_->FileExists(a));
  EXPECT_EQ(*env_->GetFileSize(a), 5u);
  {
    auto f = env_->NewAppendableFile(a);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->Append(" world").ok());
    ASSERT_TRUE((*f)->Sync().ok());
    ASSERT_TRUE((*f)->Close().ok());
    EXPECT_FALSE((*f)->Append("x").ok()) << "append after close must fail";
  }
  EXPECT_EQ(*ReadFileToString(env_, a), "hello world");

  auto r = env_->NewRandomAccessFile(a);
  ASSERT_TRUE(r.ok());
  char buf[16];
  EXPECT_EQ(*(*r)->Read(6, 100, buf), 5u);
  EXPECT_EQ(std::string(buf, 5), "world");
  EXPECT_EQ(*(*r)->Read(11, 4, buf), 0u) << "read at EOF returns 0";
  EXPECT_EQ(ReadFully(**r, 8, 10, buf).code(), absl::StatusCode::kOutOfRange);

  ASSERT_TRUE(env_->RenameFile(a, b).ok());
  EXPECT_FALSE(env_->FileExists(a));
  EXPECT_EQ(*ReadFileToString(env_, b), "hello world");
  ASSERT_TRUE(env_->CreateDir(root_ + "/sub/dir").ok());
  auto kids = env_->GetChildren(root_);
  ASSERT_TRUE(kids.ok());
  EXPECT_EQ(*kids, (std::vector<std::string>{"b", "sub"}));
  ASSERT_TRUE(env_->DeleteFile(b).ok());
  EXPECT_EQ(env_->DeleteFile(b).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadFileToString(env_, b).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(env_->NewWritableFile(root_ + "/missing/x").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(EnvContract, ClockIsMonotonic) {
  const int64_t t0 = env_->NowMicros();
  env_->SleepForMicros(1000);
  EXPECT_GE(env_->NowMicros() - t0, 1000);
}

INSTANTIATE_TEST_SUITE_P(PosixAndMem, EnvContract, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "Posix" : "Mem";
                         });

TEST(MemEnv, SimulatedClockAndSeed) {
  auto env = NewMemEnv(99);
  EXPECT_EQ(env->NowMicros(), 0);
  env->AdvanceMicros(250);
  EXPECT_EQ(env->NowMicros(), 250);
  EXPECT_EQ(env->RandomSeed(), 99u);
}

TEST(FaultEnv, FailsTheNthWriteOnly) {
  auto mem = NewMemEnv();
  FaultOptions o;
  o.fail_nth_write = 3;
  FaultInjectionEnv env(mem.get(), o);
  auto f = env.NewWritableFile("f");
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE((*f)->Append("1").ok());
  EXPECT_TRUE((*f)->Append("2").ok());
  absl::Status third = (*f)->Append("3");
  EXPECT_EQ(third.code(), absl::StatusCode::kInternal);
  EXPECT_NE(third.message().find("write #3"), absl::string_view::npos);
  EXPECT_TRUE((*f)->Append("4").ok());
  EXPECT_EQ(*ReadFileToString(mem.get(), "f"), "124") << "a failed append writes nothing";
  EXPECT_EQ(env.injected_faults(), 1);
}

TEST(FaultEnv, DiskFullIsResourceExhausted) {
  auto mem = NewMemEnv();
  FaultOptions o;
  o.disk_bytes = 10;
  FaultInjectionEnv env(mem.get(), o);
  auto f = env.NewWritableFile("f");
  EXPECT_TRUE((*f)->Append("12345678").ok());
  EXPECT_EQ((*f)->Append("abc").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE((*f)->Append("ab").ok());
  EXPECT_EQ(*ReadFileToString(mem.get(), "f"), "12345678ab");
}

TEST(FaultEnv, DropUnsyncedDataKeepsOnlySyncedBytes) {
  auto mem = NewMemEnv();
  FaultInjectionEnv env(mem.get(), FaultOptions{});
  auto f = env.NewWritableFile("log");
  ASSERT_TRUE((*f)->Append("durable|").ok());
  ASSERT_TRUE((*f)->Sync().ok());
  ASSERT_TRUE((*f)->Append("lost").ok());
  auto g = env.NewWritableFile("never_synced");
  ASSERT_TRUE((*g)->Append("gone").ok());
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  EXPECT_EQ(*ReadFileToString(mem.get(), "log"), "durable|");
  EXPECT_EQ(*ReadFileToString(mem.get(), "never_synced"), "");
}

TEST(FaultEnv, ShortReadsAreSeededAndReadFileStillWorks) {
  auto mem = NewMemEnv();
  std::string data(10000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  ASSERT_TRUE(WriteStringToFile(mem.get(), data, "big", false).ok());
  auto count_short = [&](uint64_t seed) {
    FaultOptions o;
    o.seed = seed;
    o.short_read_one_in = 2;
    FaultInjectionEnv env(mem.get(), o);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(*ReadFileToString(&env, "big"), data);
    return env.short_reads();
  };
  const int64_t a = count_short(5);
  EXPECT_GT(a, 0);
  EXPECT_EQ(count_short(5), a) << "same seed, same faults";
}

TEST(FaultEnv, OneInNWritesIsReplayable) {
  auto run = [](uint64_t seed) {
    auto mem = NewMemEnv();
    FaultOptions o;
    o.seed = seed;
    o.fail_write_one_in = 4;
    FaultInjectionEnv env(mem.get(), o);
    auto f = env.NewWritableFile("f");
    std::string pattern;
    for (int i = 0; i < 200; ++i) pattern += (*f)->Append("x").ok() ? '.' : 'X';
    return pattern;
  };
  const std::string p = run(11);
  EXPECT_EQ(p, run(11));
  EXPECT_NE(p, run(12));
  const auto failures = std::count(p.begin(), p.end(), 'X');
  EXPECT_GT(failures, 20);
  EXPECT_LT(failures, 80);
}

}  // namespace
}  // namespace kvrecall
