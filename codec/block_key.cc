#include "codec/block_key.h"

#include "codec/bytes.h"

namespace kvrecall {

BlockKey ChainBlockKey(const BlockKey& parent, const Hash128& fingerprint,
                       absl::string_view namespace_salt, absl::Span<const int32_t> tokens) {
  std::string buf = "kvrecall.blockkey.v1";
  buf.reserve(buf.size() + 48 + namespace_salt.size() + 4 * tokens.size());
  AppendLE<uint64_t>(&buf, parent.lo);
  AppendLE<uint64_t>(&buf, parent.hi);
  AppendLE<uint64_t>(&buf, fingerprint.lo);
  AppendLE<uint64_t>(&buf, fingerprint.hi);
  AppendLE<uint32_t>(&buf, static_cast<uint32_t>(namespace_salt.size()));
  buf.append(namespace_salt.data(), namespace_salt.size());
  AppendLE<uint32_t>(&buf, static_cast<uint32_t>(tokens.size()));
  for (int32_t t : tokens) AppendLE<int32_t>(&buf, t);
  return Hash128Of(buf);
}

std::vector<BlockKey> ChainBlockKeys(const Hash128& fingerprint, absl::string_view namespace_salt,
                                     absl::Span<const int32_t> tokens, int block_tokens) {
  std::vector<BlockKey> keys;
  if (block_tokens <= 0) return keys;
  BlockKey parent;
  for (size_t start = 0; start + block_tokens <= tokens.size(); start += block_tokens) {
    parent = ChainBlockKey(parent, fingerprint, namespace_salt,
                           tokens.subspan(start, static_cast<size_t>(block_tokens)));
    keys.push_back(parent);
  }
  return keys;
}

BlockKey SequenceBlockKey(const Hash128& fingerprint, absl::string_view namespace_salt, absl::string_view sequence_id,
                          int layer_begin, int layer_count, int64_t block_index) {
  std::string buf = "kvrecall.seqkey.v1";
  AppendLE<uint64_t>(&buf, fingerprint.lo);
  AppendLE<uint64_t>(&buf, fingerprint.hi);
  AppendLE<uint32_t>(&buf, static_cast<uint32_t>(namespace_salt.size()));
  buf.append(namespace_salt.data(), namespace_salt.size());
  AppendLE<uint32_t>(&buf, static_cast<uint32_t>(sequence_id.size()));
  buf.append(sequence_id.data(), sequence_id.size());
  AppendLE<int32_t>(&buf, layer_begin);
  AppendLE<int32_t>(&buf, layer_count);
  AppendLE<int64_t>(&buf, block_index);
  return Hash128Of(buf);
}

}  // namespace kvrecall
