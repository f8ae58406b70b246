// The one conversion from rocksdb::Status to absl::Status.
#ifndef KVRECALL_STORE_ROCKSDB_STATUS_H_
#define KVRECALL_STORE_ROCKSDB_STATUS_H_

#include <rocksdb/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvrecall {

// ok -> ok. Corruption -> DATA_LOSS; NotFound -> NOT_FOUND; NoSpace (an
// IOError subcode) -> RESOURCE_EXHAUSTED; Busy, TimedOut, TryAgain and
// other IOErrors -> UNAVAILABLE; InvalidArgument -> INVALID_ARGUMENT;
// NotSupported -> UNIMPLEMENTED; Aborted -> ABORTED; Incomplete and
// ShutdownInProgress -> UNAVAILABLE; anything else INTERNAL. The message is
// "<context>: <rocksdb ToString()>".
absl::Status FromRocksDbStatus(const rocksdb::Status& status, absl::string_view context);

}  // namespace kvrecall

#endif  // KVRECALL_STORE_ROCKSDB_STATUS_H_
