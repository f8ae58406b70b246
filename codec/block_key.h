// BlockKey: the 128-bit identity of an immutable prefix block, chained like
// vLLM / LMCache / SGLang prefix hashes:
//
//   key_i = XXH3-128("kvrecall.blockkey.v1" | key_{i-1} | fingerprint |
//                    salt | token ids of block i)
//
// with key_{-1} = 0. Equal keys mean: same model fingerprint (model, layout,
// codec, codebook), same namespace salt, and the same tokens from position 0
// through the end of this block. Any changed token, salt or fingerprint
// changes this key and every later one.
#ifndef KVRECALL_CODEC_BLOCK_KEY_H_
#define KVRECALL_CODEC_BLOCK_KEY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/hash.h"

namespace kvrecall {

using BlockKey = Hash128;

BlockKey ChainBlockKey(const BlockKey& parent, const Hash128& fingerprint,
                       absl::string_view namespace_salt, absl::Span<const int32_t> tokens);

// Keys of the full `block_tokens`-sized blocks of `tokens` (a partial tail
// block gets no key: blocks are immutable, a tail would change as it grows).
std::vector<BlockKey> ChainBlockKeys(const Hash128& fingerprint, absl::string_view namespace_salt,
                                     absl::Span<const int32_t> tokens, int block_tokens);

// Key of block `block_index` of a long sequence's layers [layer_begin,
// layer_begin + layer_count) (design: sequence blocks, token-addressable):
//   XXH3-128("kvrecall.seqkey.v1" | fingerprint | salt | sequence id |
//            layer_begin | layer_count | block_index)
// Distinct from every prefix key (another domain string).
BlockKey SequenceBlockKey(const Hash128& fingerprint, absl::string_view namespace_salt, absl::string_view sequence_id,
                          int layer_begin, int layer_count, int64_t block_index);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_BLOCK_KEY_H_
