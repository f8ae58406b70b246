// The llama2.c / SentencePiece-BPE tokenizer (tokenizer.bin format):
//   int32 max_token_length, then vocab_size × {f32 score, int32 len, bytes}.
// Encode follows llama2.c run.c: a dummy-prefix " " for non-empty text, UTF-8
// code points looked up (else byte-fallback tokens <0xXX> = byte + 3), then
// greedy merging of the adjacent pair with the highest-scoring merged piece.
// Immutable after loading; thread-safe.
#ifndef KVRECALL_ENGINE_TOKENIZER_H_
#define KVRECALL_ENGINE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/env.h"

namespace kvrecall {

class Tokenizer {
 public:
  static constexpr int kUnk = 0;
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;

  // DATA_LOSS on truncation or a record whose length runs past the file;
  // INVALID_ARGUMENT on a non-finite score or negative length.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(Env* env, const std::string& path,
                                                         int vocab_size);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromBytes(const std::string& bytes,
                                                              int vocab_size);

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  // Token ids of `text` (no BOS/EOS).
  std::vector<int> Encode(absl::string_view text) const;
  // The text of `token` following `prev` (strips the leading space after
  // BOS, turns <0xXX> into the raw byte). Out-of-range ids decode to "".
  std::string Decode(int prev, int token) const;
  // Decode of a whole sequence.
  std::string DecodeAll(const std::vector<int>& tokens) const;
  const std::string& piece(int id) const { return pieces_[id]; }

 private:
  Tokenizer() = default;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  absl::flat_hash_map<std::string, int> lookup_;
  int max_token_length_ = 0;
};

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_TOKENIZER_H_
