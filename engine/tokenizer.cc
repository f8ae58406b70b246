#include "engine/tokenizer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "common/status.h"

namespace kvrecall {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(Env* env, const std::string& path,
                                                           int vocab_size) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(env, path));
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = FromBytes(bytes, vocab_size);
  if (!t.ok()) return Annotate(t.status(), path);
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromBytes(const std::string& bytes,
                                                                int vocab_size) {
  if (vocab_size < 3 + 256 || vocab_size > (1 << 22)) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size ", vocab_size,
                                                   " cannot hold the special and byte tokens"));
  }
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  if (n < 4) return absl::DataLossError("tokenizer truncated: no header");
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->max_token_length_ = LoadLE<int32_t>(p);
  size_t off = 4;
  t->pieces_.reserve(vocab_size);
  t->scores_.reserve(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    if (n - off < 8) {
      return absl::DataLossError(absl::StrCat("tokenizer truncated at token ", i, " of ", vocab_size));
    }
    const float score = LoadLE<float>(p + off);
    const int32_t len = LoadLE<int32_t>(p + off + 4);
    off += 8;
    if (!std::isfinite(score)) return absl::InvalidArgumentError(absl::StrCat("token ", i, ": score is not finite"));
    if (len < 0) return absl::InvalidArgumentError(absl::StrCat("token ", i, ": negative length ", len));
    if (static_cast<size_t>(len) > n - off) {
      return absl::DataLossError(absl::StrCat("tokenizer truncated inside token ", i));
    }
    t->pieces_.emplace_back(bytes.data() + off, static_cast<size_t>(len));
    t->scores_.push_back(score);
    off += len;
    t->lookup_.emplace(t->pieces_.back(), i);  // first occurrence wins
  }
  if (off != n) return absl::DataLossError(absl::StrCat("tokenizer has ", n - off, " trailing bytes"));
  return t;
}

std::vector<int> Tokenizer::Encode(absl::string_view text) const {
  std::vector<int> tokens;
  if (text.empty()) return tokens;
  auto find = [&](absl::string_view s) {
    auto it = lookup_.find(s);
    return it == lookup_.end() ? -1 : it->second;
  };
  if (int space = find(" "); space >= 0) tokens.push_back(space);
  // UTF-8 code points (a continuation byte extends the current point, up to 4
  // bytes); unknown points fall back to their bytes.
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i + 1;
    while (j < text.size() && j - i < 4 && (static_cast<uint8_t>(text[j]) & 0xc0) == 0x80) ++j;
    const absl::string_view cp = text.substr(i, j - i);
    if (int id = find(cp); id >= 0) {
      tokens.push_back(id);
    } else {
      for (char c : cp) tokens.push_back(static_cast<uint8_t>(c) + 3);
    }
    i = j;
  }
  std::string merged;
  while (true) {
    float best_score = -1e10f;
    int best_id = -1;
    size_t best_idx = 0;
    for (size_t k = 0; k + 1 < tokens.size(); ++k) {
      merged = pieces_[tokens[k]];
      merged += pieces_[tokens[k + 1]];
      int id = find(merged);
      if (id >= 0 && scores_[id] > best_score) {
        best_score = scores_[id];
        best_id = id;
        best_idx = k;
      }
    }
    if (best_id < 0) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + best_idx + 1);
  }
  return tokens;
}

std::string Tokenizer::Decode(int prev, int token) const {
  if (token < 0 || token >= vocab_size()) return "";
  absl::string_view piece = pieces_[token];
  if (prev == kBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
  unsigned byte;
  if (piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>' &&
      std::sscanf(std::string(piece.substr(3, 2)).c_str(), "%02X", &byte) == 1) {
    return std::string(1, static_cast<char>(byte));
  }
  return std::string(piece);
}

std::string Tokenizer::DecodeAll(const std::vector<int>& tokens) const {
  std::string out;
  int prev = kBos;
  for (int t : tokens) {
    out += Decode(prev, t);
    prev = t;
  }
  return out;
}

}  // namespace kvrecall
