#include "common/logging.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

std::vector<std::string>* g_lines = nullptr;
void Capture(LogLevel, const std::string& line) { g_lines->push_back(line); }

TEST(Logging, ThresholdFiltersAndFormats) {
  std::vector<std::string> lines;
  g_lines = &lines;
  SetLogSink(&Capture);
  const LogLevel saved = GetLogLevel();
  SetLogLevel(LogLevel::kWARNING);
  int evaluated = 0;
  KVR_LOG(INFO) << "hidden " << ++evaluated;
  KVR_LOG(WARNING) << "shown " << 7;
  KVR_LOG(ERROR) << "also";
  SetLogLevel(saved);
  SetLogSink(nullptr);
  EXPECT_EQ(evaluated, 0) << "arguments of filtered messages must not be evaluated";
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0][0], 'W');
  EXPECT_NE(lines[0].find("logging_test.cc:"), std::string::npos);
  EXPECT_NE(lines[0].find("] shown 7\n"), std::string::npos);
  EXPECT_EQ(lines[1][0], 'E');
}

TEST(Logging, ParseLevel) {
  LogLevel l;
  EXPECT_TRUE(ParseLogLevel("debug", &l));
  EXPECT_EQ(l, LogLevel::kDEBUG);
  EXPECT_TRUE(ParseLogLevel(" WARNING ", &l));
  EXPECT_EQ(l, LogLevel::kWARNING);
  EXPECT_TRUE(ParseLogLevel("3", &l));
  EXPECT_EQ(l, LogLevel::kERROR);
  EXPECT_FALSE(ParseLogLevel("loud", &l));
}

}  // namespace
}  // namespace kvrecall
