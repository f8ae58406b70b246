#include "common/status.h"

#include <memory>
#include <string>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

int g_calls = 0;

absl::Status Fails() {
  ++g_calls;
  return absl::DataLossError("bad checksum");
}
absl::Status Succeeds() {
  ++g_calls;
  return absl::OkStatus();
}
absl::StatusOr<std::unique_ptr<int>> MakeInt(bool ok) {
  ++g_calls;
  if (!ok) return absl::InvalidArgumentError("no int");
  return std::make_unique<int>(42);
}

absl::Status UseReturnIfError(bool fail, int* reached) {
  RETURN_IF_ERROR(fail ? Fails() : Succeeds());
  *reached = 1;
  return absl::OkStatus();
}

absl::StatusOr<int> UseAssignOrReturn(bool ok) {
  ASSIGN_OR_RETURN(std::unique_ptr<int> p, MakeInt(ok));  // move-only type
  int existing = 0;
  ASSIGN_OR_RETURN(existing, absl::StatusOr<int>(*p + 1));
  return existing;
}

TEST(StatusMacros, ReturnIfErrorPropagatesAndEvaluatesOnce) {
  g_calls = 0;
  int reached = 0;
  absl::Status s = UseReturnIfError(true, &reached);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "bad checksum");
  EXPECT_EQ(reached, 0);
  EXPECT_EQ(g_calls, 1);
  EXPECT_TRUE(UseReturnIfError(false, &reached).ok());
  EXPECT_EQ(reached, 1);
  EXPECT_EQ(g_calls, 2);
}

TEST(StatusMacros, AssignOrReturnMovesValueOrStatus) {
  g_calls = 0;
  absl::StatusOr<int> good = UseAssignOrReturn(true);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 43);
  absl::StatusOr<int> bad = UseAssignOrReturn(false);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "no int");
  EXPECT_EQ(g_calls, 2);
}

TEST(StatusMacros, AnnotateKeepsCode) {
  absl::Status s = Annotate(absl::NotFoundError("x"), "reading block 7");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "reading block 7: x");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "ctx").ok());
}

}  // namespace
}  // namespace kvrecall
