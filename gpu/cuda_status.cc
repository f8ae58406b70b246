#include "gpu/cuda_status.h"

#include "absl/strings/str_cat.h"

namespace kvrecall {

absl::Status FromCudaError(cudaError_t error, absl::string_view context) {
  if (error == cudaSuccess) return absl::OkStatus();
  absl::StatusCode code;
  switch (error) {
    case cudaErrorMemoryAllocation:
      code = absl::StatusCode::kResourceExhausted;
      break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInitializationError:
      code = absl::StatusCode::kUnavailable;
      break;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidConfiguration:
    case cudaErrorInvalidDevice:
    case cudaErrorInvalidMemcpyDirection:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case cudaErrorNotSupported:
      code = absl::StatusCode::kUnimplemented;
      break;
    case cudaErrorLaunchTimeout:
      code = absl::StatusCode::kDeadlineExceeded;
      break;
    case cudaErrorECCUncorrectable:
      code = absl::StatusCode::kDataLoss;
      break;
    default:
      code = absl::StatusCode::kInternal;
  }
  return absl::Status(code, absl::StrCat(context, ": ", cudaGetErrorName(error), ": ",
                                         cudaGetErrorString(error)));
}

}  // namespace kvrecall
