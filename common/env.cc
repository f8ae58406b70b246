#include "common/env.h"

#include "absl/strings/str_cat.h"

namespace kvrecall {

absl::Status ReadFully(const RandomAccessFile& file, uint64_t offset, size_t n, char* scratch) {
  size_t done = 0;
  while (done < n) {
    absl::StatusOr<size_t> got = file.Read(offset + done, n - done, scratch + done);
    if (!got.ok()) return got.status();
    if (*got == 0) {
      return absl::OutOfRangeError(
          absl::StrCat("file ends after ", offset + done, " bytes; wanted ", offset + n));
    }
    done += *got;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileToString(Env* env, const std::string& path) {
  absl::StatusOr<uint64_t> size = env->GetFileSize(path);
  if (!size.ok()) return size.status();
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> file = env->NewRandomAccessFile(path);
  if (!file.ok()) return file.status();
  std::string data(*size, '\0');
  absl::Status s = ReadFully(**file, 0, data.size(), data.data());
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return data;
}

absl::Status WriteStringToFile(Env* env, absl::string_view data, const std::string& path,
                               bool sync) {
  absl::StatusOr<std::unique_ptr<WritableFile>> file = env->NewWritableFile(path);
  if (!file.ok()) return file.status();
  absl::Status s = (*file)->Append(data);
  if (s.ok() && sync) s = (*file)->Sync();
  absl::Status c = (*file)->Close();
  return s.ok() ? c : s;
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return "";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace kvrecall
