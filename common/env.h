// Env: every side effect core code has (clock, files, randomness), behind one
// injectable interface, as in LevelDB. Production code takes an `Env*`; tests
// pass an in-memory Env (NewMemEnv) or a seeded fault-injecting decorator
// (FaultInjectionEnv, in fault_env.h).
//
// Thread safety: every Env here is thread-safe. A WritableFile or
// RandomAccessFile is used by one thread at a time unless its implementation
// says otherwise (the ones here: RandomAccessFile::Read is thread-safe).
#ifndef KVRECALL_COMMON_ENV_H_
#define KVRECALL_COMMON_ENV_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvrecall {

// A file open for sequential writing. Data reaches stable storage only after
// Sync() returns ok; a crash may lose anything appended after the last Sync.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual absl::Status Append(absl::string_view data) = 0;
  // Makes everything appended so far durable.
  virtual absl::Status Sync() = 0;
  // Closes the file; further calls fail. The destructor closes if needed.
  virtual absl::Status Close() = 0;
};

// A file open for positional reads.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads up to `n` bytes at `offset` into `scratch` and returns how many were
  // read. Fewer than `n` (a short read) is allowed anywhere, 0 means end of
  // file; callers that need exactly n bytes use ReadFully().
  virtual absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* scratch) const = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX Env (real clock, real files). Never deleted.
  static Env* Default();

  // --- clock ---
  // Monotonic microseconds (arbitrary epoch); for durations and deadlines.
  virtual int64_t NowMicros() = 0;
  virtual void SleepForMicros(int64_t micros) = 0;

  // --- randomness ---
  // A seed for this process's random generators. Deterministic for test Envs;
  // the POSIX Env takes it from $KVRECALL_SEED if set, else from the OS.
  virtual uint64_t RandomSeed() = 0;

  // --- files ---
  // Creates or truncates `path`.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  // Opens `path` for appending, creating it if missing.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(
      const std::string& path) = 0;
  virtual absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) = 0;
  virtual bool FileExists(const std::string& path) = 0;
  virtual absl::StatusOr<uint64_t> GetFileSize(const std::string& path) = 0;
  // NOT_FOUND if missing.
  virtual absl::Status DeleteFile(const std::string& path) = 0;
  // Creates `path` and missing parents; ok if it exists.
  virtual absl::Status CreateDir(const std::string& path) = 0;
  // Atomically replaces `to` with `from`.
  virtual absl::Status RenameFile(const std::string& from, const std::string& to) = 0;
  // Names (not paths) of the entries of directory `dir`, sorted.
  virtual absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& dir) = 0;
};

// An Env whose files live in memory and whose clock is simulated: it starts at
// 0 and advances only by SleepForMicros/AdvanceMicros, so time-dependent code
// is deterministic in tests. RandomSeed() returns `seed`.
class MemEnv : public Env {
 public:
  virtual void AdvanceMicros(int64_t micros) = 0;
};
std::unique_ptr<MemEnv> NewMemEnv(uint64_t seed = 1);

// Reads exactly `n` bytes at `offset`, retrying short reads; OUT_OF_RANGE if
// the file ends first.
absl::Status ReadFully(const RandomAccessFile& file, uint64_t offset, size_t n, char* scratch);
absl::StatusOr<std::string> ReadFileToString(Env* env, const std::string& path);
// Writes `data` to `path` (truncating); syncs if `sync`.
absl::Status WriteStringToFile(Env* env, absl::string_view data, const std::string& path,
                               bool sync);

// The directory part of `path` ("" if none) and the last component.
std::string Dirname(const std::string& path);
std::string Basename(const std::string& path);

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_ENV_H_
