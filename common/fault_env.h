// FaultInjectionEnv: a seeded, replayable fault-injecting decorator over
// another Env, for tests (LevelDB's FaultInjectionTestEnv, made seeded).
//
// Faults it can inject, each independently configurable:
//   - fail the Nth write (Append) counted across all files, or 1 in N writes;
//   - "disk full": any Append that would exceed a byte budget fails with
//     RESOURCE_EXHAUSTED (nothing of that append is written);
//   - failed Syncs;
//   - short reads: 1 in N reads returns fewer bytes than asked (at least 1);
//   - power loss: DropUnsyncedData() cuts every file written through this Env
//     back to its size at its last successful Sync (files never synced become
//     empty), as a crash would.
// The same seed and the same sequence of calls give the same faults.
//
// Thread-safe. The target Env must outlive this one.
#ifndef KVRECALL_COMMON_FAULT_ENV_H_
#define KVRECALL_COMMON_FAULT_ENV_H_

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/env.h"

namespace kvrecall {

struct FaultOptions {
  uint64_t seed = 1;
  int64_t fail_nth_write = 0;          // 1-based; 0 = never
  int64_t fail_write_one_in = 0;       // 0 = never
  int64_t disk_bytes = -1;             // total bytes appendable; -1 = unlimited
  int64_t fail_sync_one_in = 0;        // 0 = never
  int64_t short_read_one_in = 0;       // 0 = never
};

class FaultInjectionEnv final : public Env {
 public:
  FaultInjectionEnv(Env* target, FaultOptions options);
  ~FaultInjectionEnv() override;

  void SetOptions(const FaultOptions& options);
  // Truncates every file written through this Env to its last synced size.
  absl::Status DropUnsyncedData();

  int64_t writes() const;          // Appends attempted
  int64_t injected_faults() const; // faults injected so far
  int64_t short_reads() const;

  // Env:
  int64_t NowMicros() override { return target_->NowMicros(); }
  void SleepForMicros(int64_t micros) override { target_->SleepForMicros(micros); }
  uint64_t RandomSeed() override { return target_->RandomSeed(); }
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(
      const std::string& path) override;
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) override;
  bool FileExists(const std::string& path) override { return target_->FileExists(path); }
  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    return target_->GetFileSize(path);
  }
  absl::Status DeleteFile(const std::string& path) override;
  absl::Status CreateDir(const std::string& path) override { return target_->CreateDir(path); }
  absl::Status RenameFile(const std::string& from, const std::string& to) override;
  absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& dir) override {
    return target_->GetChildren(dir);
  }

 private:
  friend class FaultWritableFile;
  friend class FaultRandomAccessFile;

  struct FileState {
    uint64_t size = 0;    // bytes appended so far
    uint64_t synced = 0;  // bytes durable at the last Sync
  };

  // Decides the fate of one Append of `bytes` to `path`; records its effect.
  absl::Status BeforeAppend(const std::string& path, size_t bytes);
  void AfterAppend(const std::string& path, size_t bytes);
  absl::Status BeforeSync(const std::string& path);
  void AfterSync(const std::string& path);
  // Bytes a Read of `n` may return (n, or a short count).
  size_t ReadBudget(size_t n);
  bool OneIn(int64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Env* const target_;
  mutable absl::Mutex mu_;
  FaultOptions options_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  int64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_written_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t faults_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t short_reads_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, FileState> files_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_FAULT_ENV_H_
