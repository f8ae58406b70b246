// The one conversion between absl::Status and grpc::Status. The canonical
// codes are numerically identical in both libraries, so the mapping is 1:1
// in both directions and messages are carried unchanged.
#ifndef KVRECALL_PROTO_GRPC_STATUS_H_
#define KVRECALL_PROTO_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace kvrecall {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace kvrecall

#endif  // KVRECALL_PROTO_GRPC_STATUS_H_
