// Status helpers for kvrecall's one error model: absl::Status / StatusOr.
//
// Abseil 20220623 ships no status macros; these are the project's only ones.
//
//   RETURN_IF_ERROR(expr);              // returns expr's Status if not ok
//   ASSIGN_OR_RETURN(auto x, expr);     // x = *expr, or returns its Status
//
// Codes mean one thing across the code base (see doc/errors in design.md):
// UNAVAILABLE = transient, DATA_LOSS = checksum or torn write,
// RESOURCE_EXHAUSTED = budget, INVALID_ARGUMENT = the caller's input.
// A cache miss is a result, not an error.
#ifndef KVRECALL_COMMON_STATUS_H_
#define KVRECALL_COMMON_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define KVR_STATUS_CONCAT_INNER_(a, b) a##b
#define KVR_STATUS_CONCAT_(a, b) KVR_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) once; returns it from the enclosing
// function if it is not ok.
#define RETURN_IF_ERROR(expr)                                   \
  do {                                                          \
    ::absl::Status kvr_status_ = (expr);                        \
    if (ABSL_PREDICT_FALSE(!kvr_status_.ok())) return kvr_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(lhs, expr)`: evaluates `expr` (an absl::StatusOr<T>) once;
// on error returns its status, else move-assigns the value to `lhs`, which may
// be a declaration (`auto x`, `std::unique_ptr<T> p`) or an existing lvalue.
#define ASSIGN_OR_RETURN(lhs, expr) \
  KVR_ASSIGN_OR_RETURN_IMPL_(KVR_STATUS_CONCAT_(kvr_statusor_, __LINE__), lhs, expr)

#define KVR_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)      \
  auto statusor = (expr);                                     \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace kvrecall {

// Returns `status` with `context` prepended to its message ("context: msg"),
// keeping the code. Ok stays ok.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_STATUS_H_
