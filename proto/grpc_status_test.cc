#include "proto/grpc_status.h"

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

TEST(GrpcStatus, EveryCodeRoundTripsOneToOne) {
  for (int c = 1; c <= 16; ++c) {
    const absl::Status a(static_cast<absl::StatusCode>(c), "msg " + std::to_string(c));
    const grpc::Status g = ToGrpcStatus(a);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    EXPECT_EQ(g.error_message(), "msg " + std::to_string(c));
    EXPECT_EQ(FromGrpcStatus(g), a);
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_EQ(ToGrpcStatus(absl::PermissionDeniedError("ns")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd")).code(),
            absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace kvrecall
