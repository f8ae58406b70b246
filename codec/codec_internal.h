// Internals shared by the codec implementations: parameter reading and the
// factories MakeCodec dispatches to. Not part of the public API.
#ifndef KVRECALL_CODEC_CODEC_INTERNAL_H_
#define KVRECALL_CODEC_CODEC_INTERNAL_H_

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "codec/codec.h"

namespace kvrecall {
namespace codec_internal {

// Reads typed parameters with defaults and ranges; Finish() rejects keys
// nobody asked for.
class ParamReader {
 public:
  explicit ParamReader(std::map<std::string, std::string> params) : params_(std::move(params)) {}
  int Int(const std::string& key, int def, int lo, int hi);
  double Double(const std::string& key, double def, double lo, double hi);
  bool Bool(const std::string& key, bool def);
  std::string String(const std::string& key, const std::string& def);
  // One of `options`.
  std::string Choice(const std::string& key, const std::string& def, const std::set<std::string>& options);
  absl::Status Finish();

 private:
  std::map<std::string, std::string> params_;
  std::set<std::string> used_;
  absl::Status error_;
};

absl::StatusOr<std::unique_ptr<KvCodec>> MakeRawCodec(CodecId id, ParamReader* p);
absl::StatusOr<std::unique_ptr<KvCodec>> MakeGroupQuantCodec(CodecId id, ParamReader* p);  // kivi, qwc
absl::StatusOr<std::unique_ptr<KvCodec>> MakeSquatCodec(ParamReader* p);
absl::StatusOr<std::unique_ptr<KvCodec>> MakeGearCodec(bool sparse, ParamReader* p);
absl::StatusOr<std::unique_ptr<KvCodec>> MakeCommVqCodec(ParamReader* p);  // codec/commvq.cc

}  // namespace codec_internal
}  // namespace kvrecall

#endif  // KVRECALL_CODEC_CODEC_INTERNAL_H_
