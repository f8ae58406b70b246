// A small leveled logger writing one line per message to stderr.
//
//   KVR_LOG(INFO) << "opened " << path;
//   KVR_LOG(ERROR) << status;
//
// The threshold comes from SetLogLevel() or, at start-up, the environment
// variable KVRECALL_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR; default INFO).
// Messages below the threshold cost one integer comparison. FATAL logs and
// aborts. Thread-safe: each message is written with a single write(2).
#ifndef KVRECALL_COMMON_LOGGING_H_
#define KVRECALL_COMMON_LOGGING_H_

#include <sstream>
#include <string>

#include "absl/strings/string_view.h"

namespace kvrecall {

enum class LogLevel : int { kDEBUG = 0, kINFO = 1, kWARNING = 2, kERROR = 3, kFATAL = 4 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "DEBUG", "info", "2", ...; returns false if `text` names no level.
bool ParseLogLevel(absl::string_view text, LogLevel* level);

// Where messages go; tests capture them. nullptr restores stderr. The sink is
// called with the complete line (with its trailing '\n').
using LogSink = void (*)(LogLevel level, const std::string& line);
void SetLogSink(LogSink sink);

namespace logging_internal {

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

// Makes the ternary in KVR_LOG have type void.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace logging_internal
}  // namespace kvrecall

#define KVR_LOG(severity)                                                          \
  (::kvrecall::LogLevel::k##severity < ::kvrecall::GetLogLevel())                  \
      ? (void)0                                                                    \
      : ::kvrecall::logging_internal::Voidify() &                                  \
            ::kvrecall::logging_internal::LogMessage(::kvrecall::LogLevel::k##severity, \
                                                     __FILE__, __LINE__)           \
                .stream()

#endif  // KVRECALL_COMMON_LOGGING_H_
