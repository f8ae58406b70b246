#include "common/ucx_status.h"

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

TEST(UcxStatus, MapsByMeaning) {
  EXPECT_TRUE(FromUcsStatus(UCS_OK, "x").ok());
  EXPECT_EQ(FromUcsStatus(UCS_ERR_UNREACHABLE, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromUcsStatus(UCS_ERR_CONNECTION_RESET, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromUcsStatus(UCS_ERR_ENDPOINT_TIMEOUT, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromUcsStatus(static_cast<ucs_status_t>(-45), "x").code(),
            absl::StatusCode::kUnavailable);  // link failure range
  EXPECT_EQ(FromUcsStatus(UCS_ERR_NO_MEMORY, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FromUcsStatus(UCS_ERR_INVALID_PARAM, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromUcsStatus(UCS_ERR_CANCELED, "x").code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(FromUcsStatus(UCS_ERR_UNSUPPORTED, "x").code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(FromUcsStatus(UCS_ERR_SHMEM_SEGMENT, "x").code(), absl::StatusCode::kInternal);
}

TEST(UcxStatus, MessageCarriesContextAndUcxText) {
  absl::Status s = FromUcsStatus(UCS_ERR_UNREACHABLE, "connect 127.0.0.1:9");
  EXPECT_EQ(s.message(), "connect 127.0.0.1:9: Destination is unreachable (UCS -6)");
}

}  // namespace
}  // namespace kvrecall
