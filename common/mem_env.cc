// In-memory Env with a simulated clock (see env.h: MemEnv).
#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/env.h"

namespace kvrecall {
namespace {

// A file's bytes, shared by the Env's table and every open handle, so a file
// deleted or renamed while open stays readable through its handle (POSIX).
struct FileData {
  absl::Mutex mu;
  std::string bytes ABSL_GUARDED_BY(mu);
};

class MemWritableFile final : public WritableFile {
 public:
  explicit MemWritableFile(std::shared_ptr<FileData> data) : data_(std::move(data)) {}
  absl::Status Append(absl::string_view d) override {
    if (!data_) return absl::FailedPreconditionError("file is closed");
    absl::MutexLock l(&data_->mu);
    data_->bytes.append(d.data(), d.size());
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    return data_ ? absl::OkStatus() : absl::FailedPreconditionError("file is closed");
  }
  absl::Status Close() override {
    data_.reset();
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<FileData> data_;
};

class MemRandomAccessFile final : public RandomAccessFile {
 public:
  explicit MemRandomAccessFile(std::shared_ptr<FileData> data) : data_(std::move(data)) {}
  absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* scratch) const override {
    absl::MutexLock l(&data_->mu);
    if (offset >= data_->bytes.size()) return 0;
    const size_t len = std::min<uint64_t>(n, data_->bytes.size() - offset);
    std::copy_n(data_->bytes.data() + offset, len, scratch);
    return len;
  }

 private:
  std::shared_ptr<FileData> data_;
};

class MemEnvImpl final : public MemEnv {
 public:
  explicit MemEnvImpl(uint64_t seed) : seed_(seed) {}

  int64_t NowMicros() override {
    absl::MutexLock l(&mu_);
    return now_;
  }
  void SleepForMicros(int64_t micros) override { AdvanceMicros(micros); }
  void AdvanceMicros(int64_t micros) override {
    absl::MutexLock l(&mu_);
    if (micros > 0) now_ += micros;
  }
  uint64_t RandomSeed() override { return seed_; }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    absl::MutexLock l(&mu_);
    if (absl::Status s = CheckParent(path); !s.ok()) return s;
    auto data = std::make_shared<FileData>();
    files_[path] = data;
    return std::unique_ptr<WritableFile>(new MemWritableFile(data));
  }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(
      const std::string& path) override {
    absl::MutexLock l(&mu_);
    if (absl::Status s = CheckParent(path); !s.ok()) return s;
    auto& data = files_[path];
    if (!data) data = std::make_shared<FileData>();
    return std::unique_ptr<WritableFile>(new MemWritableFile(data));
  }

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) override {
    absl::MutexLock l(&mu_);
    auto it = files_.find(path);
    if (it == files_.end()) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return std::unique_ptr<RandomAccessFile>(new MemRandomAccessFile(it->second));
  }

  bool FileExists(const std::string& path) override {
    absl::MutexLock l(&mu_);
    return files_.count(path) > 0 || dirs_.count(path) > 0;
  }

  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    absl::MutexLock l(&mu_);
    auto it = files_.find(path);
    if (it == files_.end()) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    absl::MutexLock fl(&it->second->mu);
    return it->second->bytes.size();
  }

  absl::Status DeleteFile(const std::string& path) override {
    absl::MutexLock l(&mu_);
    if (files_.erase(path) == 0) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::OkStatus();
  }

  absl::Status CreateDir(const std::string& path) override {
    absl::MutexLock l(&mu_);
    if (files_.count(path)) {
      return absl::AlreadyExistsError(absl::StrCat(path, " exists and is not a directory"));
    }
    for (std::string p = path; !p.empty() && p != "/"; p = Dirname(p)) dirs_.insert(p);
    return absl::OkStatus();
  }

  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    absl::MutexLock l(&mu_);
    auto it = files_.find(from);
    if (it == files_.end()) return absl::NotFoundError(absl::StrCat(from, ": no such file"));
    if (absl::Status s = CheckParent(to); !s.ok()) return s;
    auto data = it->second;
    files_.erase(it);
    files_[to] = std::move(data);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& dir) override {
    absl::MutexLock l(&mu_);
    if (!dirs_.count(dir)) return absl::NotFoundError(absl::StrCat(dir, ": no such directory"));
    std::set<std::string> names;
    const std::string prefix = dir == "/" ? dir : dir + "/";
    auto collect = [&](const std::string& p) {
      if (!absl::StartsWith(p, prefix)) return;
      const std::string rest = p.substr(prefix.size());
      if (!rest.empty()) names.insert(rest.substr(0, rest.find('/')));
    };
    for (const auto& f : files_) collect(f.first);
    for (const auto& d : dirs_) collect(d);
    return std::vector<std::string>(names.begin(), names.end());
  }

 private:
  // A file's parent directory must exist, as on POSIX (relative names with no
  // directory part are allowed).
  absl::Status CheckParent(const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string parent = Dirname(path);
    if (!parent.empty() && parent != "/" && !dirs_.count(parent)) {
      return absl::NotFoundError(absl::StrCat(path, ": parent directory does not exist"));
    }
    return absl::OkStatus();
  }

  const uint64_t seed_;
  absl::Mutex mu_;
  int64_t now_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::shared_ptr<FileData>> files_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> dirs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<MemEnv> NewMemEnv(uint64_t seed) { return std::make_unique<MemEnvImpl>(seed); }

}  // namespace kvrecall
