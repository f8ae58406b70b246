// The one conversion from UCX's ucs_status_t to absl::Status.
#ifndef KVRECALL_COMMON_UCX_STATUS_H_
#define KVRECALL_COMMON_UCX_STATUS_H_

#include <ucs/type/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvrecall {

// UCS_OK -> ok. Otherwise a code by meaning (unreachable peer, timeouts and
// busy resources are UNAVAILABLE; out of memory is RESOURCE_EXHAUSTED; bad
// parameters INVALID_ARGUMENT; canceled CANCELLED; ...) with the message
// "<context>: <ucs_status_string> (UCS <n>)".
absl::Status FromUcsStatus(ucs_status_t status, absl::string_view context);

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_UCX_STATUS_H_
