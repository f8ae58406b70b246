#include "store/rocksdb_status.h"

#include "absl/strings/str_cat.h"

namespace kvrecall {

absl::Status FromRocksDbStatus(const rocksdb::Status& s, absl::string_view context) {
  if (s.ok()) return absl::OkStatus();
  absl::StatusCode code = absl::StatusCode::kInternal;
  if (s.IsCorruption()) {
    code = absl::StatusCode::kDataLoss;
  } else if (s.IsNotFound()) {
    code = absl::StatusCode::kNotFound;
  } else if (s.IsNoSpace() || s.IsMemoryLimit()) {
    code = absl::StatusCode::kResourceExhausted;
  } else if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain() || s.IsIncomplete() ||
             s.IsShutdownInProgress() || s.IsIOError()) {
    code = absl::StatusCode::kUnavailable;
  } else if (s.IsInvalidArgument()) {
    code = absl::StatusCode::kInvalidArgument;
  } else if (s.IsNotSupported()) {
    code = absl::StatusCode::kUnimplemented;
  } else if (s.IsAborted()) {
    code = absl::StatusCode::kAborted;
  }
  return absl::Status(code, absl::StrCat(context, ": ", s.ToString()));
}

}  // namespace kvrecall
