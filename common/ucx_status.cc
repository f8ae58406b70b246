#include "common/ucx_status.h"

#include "absl/strings/str_cat.h"

namespace kvrecall {

absl::Status FromUcsStatus(ucs_status_t status, absl::string_view context) {
  if (status == UCS_OK) return absl::OkStatus();
  absl::StatusCode code;
  if (UCS_IS_LINK_ERROR(status) || UCS_IS_ENDPOINT_ERROR(status)) {
    code = absl::StatusCode::kUnavailable;
  } else switch (status) {
    case UCS_INPROGRESS:
    case UCS_ERR_BUSY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_TIMED_OUT:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_IO_ERROR:
      code = absl::StatusCode::kUnavailable;
      break;
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_EXCEEDS_LIMIT:
      code = absl::StatusCode::kResourceExhausted;
      break;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
    case UCS_ERR_MESSAGE_TRUNCATED:
    case UCS_ERR_OUT_OF_RANGE:
    case UCS_ERR_BUFFER_TOO_SMALL:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case UCS_ERR_CANCELED:
      code = absl::StatusCode::kCancelled;
      break;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NOT_IMPLEMENTED:
      code = absl::StatusCode::kUnimplemented;
      break;
    case UCS_ERR_NO_ELEM:
    case UCS_ERR_NO_DEVICE:
      code = absl::StatusCode::kNotFound;
      break;
    case UCS_ERR_ALREADY_EXISTS:
      code = absl::StatusCode::kAlreadyExists;
      break;
    case UCS_ERR_NO_PROGRESS:
      code = absl::StatusCode::kDeadlineExceeded;
      break;
    default:
      code = absl::StatusCode::kInternal;
  }
  return absl::Status(code, absl::StrCat(context, ": ", ucs_status_string(status), " (UCS ",
                                         static_cast<int>(status), ")"));
}

}  // namespace kvrecall
