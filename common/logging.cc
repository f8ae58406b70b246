#include "common/logging.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <sys/time.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace kvrecall {
namespace {

LogLevel InitialLevel() {
  LogLevel level = LogLevel::kINFO;
  if (const char* env = std::getenv("KVRECALL_LOG_LEVEL")) ParseLogLevel(env, &level);
  return level;
}

std::atomic<int>& LevelVar() {
  static std::atomic<int> level{static_cast<int>(InitialLevel())};
  return level;
}

std::atomic<LogSink> g_sink{nullptr};

const char* LevelChar(LogLevel level) {
  switch (level) {
    case LogLevel::kDEBUG: return "D";
    case LogLevel::kINFO: return "I";
    case LogLevel::kWARNING: return "W";
    case LogLevel::kERROR: return "E";
    case LogLevel::kFATAL: return "F";
  }
  return "?";
}

}  // namespace

void SetLogLevel(LogLevel level) { LevelVar().store(static_cast<int>(level)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(LevelVar().load(std::memory_order_relaxed)); }

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  const std::string t = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  static const struct { const char* name; LogLevel level; } kNames[] = {
      {"DEBUG", LogLevel::kDEBUG}, {"0", LogLevel::kDEBUG},   {"INFO", LogLevel::kINFO},
      {"1", LogLevel::kINFO},      {"WARNING", LogLevel::kWARNING}, {"WARN", LogLevel::kWARNING},
      {"2", LogLevel::kWARNING},   {"ERROR", LogLevel::kERROR}, {"3", LogLevel::kERROR}};
  for (const auto& n : kNames) {
    if (t == n.name) {
      *level = n.level;
      return true;
    }
  }
  return false;
}

void SetLogSink(LogSink sink) { g_sink.store(sink); }

namespace logging_internal {

LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  localtime_r(&tv.tv_sec, &tm);
  const char* base = file;
  for (const char* p = file; *p; ++p) {
    if (*p == '/') base = p + 1;
  }
  stream_ << absl::StrFormat("%s%02d%02d %02d:%02d:%02d.%06d %s:%d] ", LevelChar(level),
                             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                             static_cast<int>(tv.tv_usec), base, line);
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string line = stream_.str();
  if (LogSink sink = g_sink.load()) {
    sink(level_, line);
  } else {
    ssize_t unused = ::write(STDERR_FILENO, line.data(), line.size());
    (void)unused;
  }
  if (level_ == LogLevel::kFATAL) std::abort();
}

}  // namespace logging_internal
}  // namespace kvrecall
