#include "store/rocksdb_status.h"

#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <rocksdb/db.h>

namespace kvrecall {
namespace {

TEST(RocksDbStatus, MapsByMeaning) {
  EXPECT_TRUE(FromRocksDbStatus(rocksdb::Status::OK(), "x").ok());
  EXPECT_EQ(FromRocksDbStatus(rocksdb::Status::Corruption("bad block"), "x").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(FromRocksDbStatus(rocksdb::Status::NotFound(), "x").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(FromRocksDbStatus(rocksdb::Status::NoSpace("disk"), "x").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FromRocksDbStatus(rocksdb::Status::IOError("eio"), "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromRocksDbStatus(rocksdb::Status::Busy(), "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromRocksDbStatus(rocksdb::Status::InvalidArgument("opt"), "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromRocksDbStatus(rocksdb::Status::NotSupported(), "x").code(),
            absl::StatusCode::kUnimplemented);
  absl::Status s = FromRocksDbStatus(rocksdb::Status::Corruption("bad block"), "get k1");
  EXPECT_EQ(s.message(), "get k1: Corruption: bad block");
}

TEST(RocksDbStatus, RealDatabaseErrors) {
  const char* t = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(t ? t : "/tmp") + "/rocksdb_status_test";
  rocksdb::Options options;
  options.create_if_missing = false;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status st = rocksdb::DB::Open(options, path + "_missing", &raw);
  absl::Status s = FromRocksDbStatus(st, "open");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;  // "does not exist"
  options.create_if_missing = true;
  ASSERT_TRUE(rocksdb::DB::Open(options, path, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string v;
  EXPECT_EQ(FromRocksDbStatus(db->Get(rocksdb::ReadOptions(), "nope", &v), "get").code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvrecall
