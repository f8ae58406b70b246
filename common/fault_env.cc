#include "common/fault_env.h"

#include "absl/strings/str_cat.h"

namespace kvrecall {

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(FaultInjectionEnv* env, std::string path, std::unique_ptr<WritableFile> target)
      : env_(env), path_(std::move(path)), target_(std::move(target)) {}

  absl::Status Append(absl::string_view data) override {
    if (absl::Status s = env_->BeforeAppend(path_, data.size()); !s.ok()) return s;
    absl::Status s = target_->Append(data);
    if (s.ok()) env_->AfterAppend(path_, data.size());
    return s;
  }
  absl::Status Sync() override {
    if (absl::Status s = env_->BeforeSync(path_); !s.ok()) return s;
    absl::Status s = target_->Sync();
    if (s.ok()) env_->AfterSync(path_);
    return s;
  }
  absl::Status Close() override { return target_->Close(); }

 private:
  FaultInjectionEnv* const env_;
  const std::string path_;
  std::unique_ptr<WritableFile> target_;
};

class FaultRandomAccessFile final : public RandomAccessFile {
 public:
  FaultRandomAccessFile(FaultInjectionEnv* env, std::unique_ptr<RandomAccessFile> target)
      : env_(env), target_(std::move(target)) {}
  absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* scratch) const override {
    return target_->Read(offset, env_->ReadBudget(n), scratch);
  }

 private:
  FaultInjectionEnv* const env_;
  std::unique_ptr<RandomAccessFile> target_;
};

FaultInjectionEnv::FaultInjectionEnv(Env* target, FaultOptions options)
    : target_(target), options_(options), rng_(options.seed) {}

FaultInjectionEnv::~FaultInjectionEnv() = default;

void FaultInjectionEnv::SetOptions(const FaultOptions& options) {
  absl::MutexLock l(&mu_);
  options_ = options;
  rng_.seed(options.seed);
}

int64_t FaultInjectionEnv::writes() const {
  absl::MutexLock l(&mu_);
  return writes_;
}
int64_t FaultInjectionEnv::injected_faults() const {
  absl::MutexLock l(&mu_);
  return faults_;
}
int64_t FaultInjectionEnv::short_reads() const {
  absl::MutexLock l(&mu_);
  return short_reads_;
}

bool FaultInjectionEnv::OneIn(int64_t n) {
  return n > 0 && std::uniform_int_distribution<int64_t>(0, n - 1)(rng_) == 0;
}

absl::Status FaultInjectionEnv::BeforeAppend(const std::string& path, size_t bytes) {
  absl::MutexLock l(&mu_);
  const int64_t n = ++writes_;
  if (n == options_.fail_nth_write || OneIn(options_.fail_write_one_in)) {
    ++faults_;
    return absl::InternalError(absl::StrCat("injected write failure (write #", n, ") on ", path));
  }
  if (options_.disk_bytes >= 0 &&
      bytes_written_ + static_cast<int64_t>(bytes) > options_.disk_bytes) {
    ++faults_;
    return absl::ResourceExhaustedError(
        absl::StrCat("injected disk full: ", path, " (", bytes_written_, " of ",
                     options_.disk_bytes, " bytes used)"));
  }
  return absl::OkStatus();
}

void FaultInjectionEnv::AfterAppend(const std::string& path, size_t bytes) {
  absl::MutexLock l(&mu_);
  bytes_written_ += static_cast<int64_t>(bytes);
  files_[path].size += bytes;
}

absl::Status FaultInjectionEnv::BeforeSync(const std::string& path) {
  absl::MutexLock l(&mu_);
  if (OneIn(options_.fail_sync_one_in)) {
    ++faults_;
    return absl::InternalError(absl::StrCat("injected sync failure on ", path));
  }
  return absl::OkStatus();
}

void FaultInjectionEnv::AfterSync(const std::string& path) {
  absl::MutexLock l(&mu_);
  FileState& f = files_[path];
  f.synced = f.size;
}

size_t FaultInjectionEnv::ReadBudget(size_t n) {
  absl::MutexLock l(&mu_);
  if (n < 2 || !OneIn(options_.short_read_one_in)) return n;
  ++short_reads_;
  return std::uniform_int_distribution<size_t>(1, n - 1)(rng_);
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(
    const std::string& path) {
  absl::StatusOr<std::unique_ptr<WritableFile>> f = target_->NewWritableFile(path);
  if (!f.ok()) return f.status();
  {
    absl::MutexLock l(&mu_);
    files_[path] = FileState{};
  }
  return std::unique_ptr<WritableFile>(new FaultWritableFile(this, path, std::move(*f)));
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewAppendableFile(
    const std::string& path) {
  // An existing file's current bytes count as durable.
  uint64_t existing = 0;
  if (target_->FileExists(path)) {
    absl::StatusOr<uint64_t> size = target_->GetFileSize(path);
    if (!size.ok()) return size.status();
    existing = *size;
  }
  absl::StatusOr<std::unique_ptr<WritableFile>> f = target_->NewAppendableFile(path);
  if (!f.ok()) return f.status();
  {
    absl::MutexLock l(&mu_);
    auto it = files_.find(path);
    if (it == files_.end()) files_[path] = FileState{existing, existing};
  }
  return std::unique_ptr<WritableFile>(new FaultWritableFile(this, path, std::move(*f)));
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>> FaultInjectionEnv::NewRandomAccessFile(
    const std::string& path) {
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> f = target_->NewRandomAccessFile(path);
  if (!f.ok()) return f.status();
  return std::unique_ptr<RandomAccessFile>(new FaultRandomAccessFile(this, std::move(*f)));
}

absl::Status FaultInjectionEnv::DeleteFile(const std::string& path) {
  absl::Status s = target_->DeleteFile(path);
  if (s.ok()) {
    absl::MutexLock l(&mu_);
    files_.erase(path);
  }
  return s;
}

absl::Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  absl::Status s = target_->RenameFile(from, to);
  if (s.ok()) {
    absl::MutexLock l(&mu_);
    auto it = files_.find(from);
    if (it != files_.end()) {
      files_[to] = it->second;
      files_.erase(from);
    } else {
      files_.erase(to);
    }
  }
  return s;
}

absl::Status FaultInjectionEnv::DropUnsyncedData() {
  std::map<std::string, FileState> files;
  {
    absl::MutexLock l(&mu_);
    files = files_;
  }
  for (auto& [path, state] : files) {
    if (state.synced == state.size || !target_->FileExists(path)) continue;
    absl::StatusOr<std::string> data = ReadFileToString(target_, path);
    if (!data.ok()) return data.status();
    data->resize(std::min<uint64_t>(data->size(), state.synced));
    absl::Status s = WriteStringToFile(target_, *data, path, /*sync=*/true);
    if (!s.ok()) return s;
    absl::MutexLock l(&mu_);
    files_[path].size = state.synced;
  }
  return absl::OkStatus();
}

}  // namespace kvrecall
