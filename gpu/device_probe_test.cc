#include "gpu/device_probe.h"

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

TEST(DeviceProbe, ReportsADeviceOrSaysWhyNot) {
  absl::StatusOr<GpuInfo> info = ProbeGpu();
  if (!info.ok()) {
    EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_FALSE(info.status().message().empty());
    if (!BuiltWithCuda()) {
      EXPECT_NE(info.status().message().find("without CUDA"), absl::string_view::npos);
    }
    GTEST_SKIP() << info.status().message();
  }
  EXPECT_TRUE(BuiltWithCuda());
  EXPECT_GE(info->device_count, 1);
  EXPECT_FALSE(info->name.empty());
  EXPECT_GT(info->total_memory_bytes, 0u);
  EXPECT_LE(info->free_memory_bytes, info->total_memory_bytes);
  EXPECT_GE(info->cc_major, 7);
}

}  // namespace
}  // namespace kvrecall
