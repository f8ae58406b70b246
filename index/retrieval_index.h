// RetrievalIndex: finds the tokens attention needs among a long context from
// a small per-token summary. One index serves one (layer, KV head) of one
// sequence; the G query heads of the GQA group search it together.
//
// Lifecycle: Train (calibrate from sample keys and queries; no-op for
// methods that need none) -> Add tokens as the sequence grows -> Score one
// query at a time -> Reset to drop the sequence (keeping the calibration).
// SelectTokens turns scores into the token set attention runs over: the
// first `sinks` tokens and the last `window` tokens always, never scored,
// plus the union over the group's query heads of each head's top-K of the
// rest, K a count or a fraction of the context.
//
// Errors: FAILED_PRECONDITION for an untrained index; INVALID_ARGUMENT for
// dimension mismatches, NaN/Inf input, K out of range.
// Thread safety: Score and SelectTokens are const and thread-safe; Train,
// Add and Reset need exclusive access.
#ifndef KVRECALL_INDEX_RETRIEVAL_INDEX_H_
#define KVRECALL_INDEX_RETRIEVAL_INDEX_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "codec/kv_layout.h"

namespace kvrecall {

// Calibration sample of one (layer, KV head): keys and the group's queries,
// both before and after RoPE, with their positions.
struct TrainingData {
  int dim = 0;
  const float* k_pre = nullptr;   // [num_keys][dim]
  const float* k_post = nullptr;  // [num_keys][dim]
  int64_t num_keys = 0;
  const float* q_pre = nullptr;   // [num_queries][dim], any query heads of the group
  const float* q_post = nullptr;
  int64_t num_queries = 0;
};

class RetrievalIndex {
 public:
  virtual ~RetrievalIndex() = default;
  virtual std::string name() const = 0;
  virtual int dim() const = 0;
  virtual absl::Status Train(const TrainingData& data) = 0;
  virtual bool trained() const = 0;
  // Appends n tokens at positions size() .. size()+n-1; keys [n][dim].
  virtual absl::Status Add(const float* k_pre, const float* k_post, int64_t n) = 0;
  // Approximate attention logits of one query (at position `pos`) for every
  // token: scores has size() entries; larger = more relevant. The tokens are
  // split over `threads` threads (0 = all cores); results do not depend on it.
  virtual absl::Status Score(const float* q_pre, const float* q_post, int64_t pos, absl::Span<float> scores,
                             int threads) const = 0;
  absl::Status Score(const float* q_pre, const float* q_post, int64_t pos, absl::Span<float> scores) const {
    return Score(q_pre, q_post, pos, scores, 1);
  }
  virtual int64_t size() const = 0;
  virtual void Reset() = 0;

  // Indexes whose score is a function of one small code per token (A²ATS:
  // score = table[code]) expose the codes (size() of them, each below
  // num_codes()) and the queries' tables, and SelectTokens thresholds on a
  // histogram of codes in one pass instead of scoring and ranking every
  // token per query head (same selection, ties included). 0 / nullptr /
  // UNIMPLEMENTED for the others.
  virtual int num_codes() const { return 0; }
  virtual const uint16_t* codes() const { return nullptr; }
  // The tables of `group` queries q [group][dim] (pre- and post-RoPE) at once:
  // table [group][num_codes()] (one pass over the codebook for all of them).
  virtual absl::Status CodeScores(const float* q_pre, const float* q_post, int group, absl::Span<float> table) const;
  // Position bands (A²ATS `band=T`): the tokens of band j, [j·T, (j+1)·T),
  // are scored with a table of their own, whose rotation places them at the
  // band's middle rather than at one fixed distance for all. 0 = no bands:
  // one table for every token.
  virtual int64_t band_tokens() const { return 0; }
  // The tables of `group` queries at position pos for the tokens [0, end):
  // table [group][NumBands(*this, end)][num_codes()]. Without bands this is
  // CodeScores's table.
  virtual absl::Status BandCodeScores(const float* q_pre, const float* q_post, int group, int64_t pos, int64_t end,
                                      absl::Span<float> table) const;
  // Bits of per-token summary (what a GPU would keep per token and KV head).
  virtual double BitsPerToken() const = 0;
  // Bytes of per-sequence-independent state (codebooks, whitening, ...).
  virtual int64_t FixedBytes() const = 0;
  // Canonical spec: MakeRetrievalIndex(spec(), layout) builds an empty twin.
  virtual std::string spec() const = 0;

  // The method's state (calibration + tokens) as bytes, and back. LoadState
  // validates every size against the spec and returns DATA_LOSS otherwise.
  virtual void SaveState(std::string* out) const = 0;
  virtual absl::Status LoadState(absl::string_view state) = 0;
};

// Bands covering tokens [0, end): at least 1 (and 1 without bands).
int64_t NumBands(const RetrievalIndex& index, int64_t end);
// Calls f(lo, hi, j) for each run [lo, hi) of the tokens [begin, end) that
// lies in one band, j (one run, j = 0, without bands: band <= 0): work keyed
// by band without a division per token.
template <class F>
void ForEachBand(int64_t band, int64_t begin, int64_t end, F&& f) {
  for (int64_t lo = begin; lo < end;) {
    const int64_t j = band > 0 ? lo / band : 0, hi = band > 0 ? std::min(end, (j + 1) * band) : end;
    f(lo, hi, j);
    lo = hi;
  }
}
// INVALID_ARGUMENT where the band tables over [0, end) would pass
// kMaxBandTableEntries per query (bands too narrow for the context).
constexpr int64_t kMaxBandTableEntries = int64_t{1} << 22;
absl::Status CheckBandTables(const RetrievalIndex& index, int64_t end);

// Versioned, checksummed serialization of a whole index (doc/formats.md,
// "Retrieval index v1"): spec, layout, state, XXH3-64.
std::string SerializeRetrievalIndex(const RetrievalIndex& index, const KvLayout& layout);
// DATA_LOSS for truncation, corruption or inconsistent sizes; UNIMPLEMENTED
// for an unknown version.
absl::StatusOr<std::unique_ptr<RetrievalIndex>> LoadRetrievalIndex(absl::string_view bytes);

struct SelectionConfig {
  int sinks = 4;
  int window = 64;
  int64_t topk = 0;           // tokens per query head, if > 0
  double topk_fraction = 0.03;  // else this fraction of the context
  int threads = 1;            // scoring threads (0 = all cores)
  bool by_code = true;        // use the code histogram where the index has codes (false: score every token)
};

// Token ids (sorted) attention should run over for the query heads q [G][dim]
// at position pos (the context is tokens 0..min(pos, size()-1)).
absl::StatusOr<std::vector<int64_t>> SelectTokens(const RetrievalIndex& index, const float* q_pre,
                                                  const float* q_post, int group, int64_t pos,
                                                  const SelectionConfig& config);

// Code-sorted storage of an index's tokens (for indexes with per-token
// codes, e.g. A²ATS). The tokens are cut into segments of segment_tokens;
// a sealed segment is stored in order of (rank of its code, position), the
// ranks fixed up front (e.g. by each code's score under a mean query, so
// that codes queries pick together sit together). A selection then names
// whole runs of rows: each picked code is one run per segment, found from
// the segment's per-rank row offsets without a pass over its tokens, and
// the rows a step reads are contiguous rather than scattered in time.
// Select picks exactly the tokens SelectTokens(by_code) picks with sinks =
// window = 0 (ties at a head's threshold go to the earliest tokens), given
// as storage rows for the sealed segments and as positions for the
// not-yet-sealed tail. State per segment: num_codes + 1 u16 offsets.
class CodeSortedLayout {
 public:
  // `order`: the index's num_codes codes in storage order (a permutation);
  // 0 < segment_tokens < 2^32 (row offsets take 2 bytes per code and segment
  // up to 65535 tokens, 4 beyond).
  absl::Status Init(std::vector<int> order, int64_t segment_tokens);
  int64_t segment_tokens() const { return seg_; }
  int64_t sealed() const { return seg_ * segments(); }  // tokens in sealed segments
  int64_t segments() const { return static_cast<int64_t>(wide() ? starts32_.size() : starts16_.size()); }
  // Seals the next segment, tokens [sealed(), sealed() + segment_tokens) of
  // `index` (which must hold them); returns its storage order: perm[row] =
  // position within the segment.
  absl::StatusOr<std::vector<uint32_t>> Seal(const RetrievalIndex& index);
  // The storage order of sealed segment `segment` (as Seal returned it).
  std::vector<uint32_t> Permutation(const RetrievalIndex& index, int64_t segment) const;
  struct Picks {
    std::vector<int64_t> rows;     // storage rows (segment * segment_tokens + row), ascending
    std::vector<int64_t> pending;  // positions >= sealed(), ascending
  };
  // The union over the `group` query heads (at position pos; -1: end - 1)
  // of each head's top-k among tokens [0, end) (end >= sealed()). With an
  // index with position bands, segments must not straddle bands (checked
  // when sealing).
  absl::Status Select(const RetrievalIndex& index, const float* q_pre, const float* q_post, int group, int64_t end,
                      int64_t k, Picks* out, int64_t pos = -1) const;
  int64_t StateBytes() const { return segments() * (nc_ + 1) * (wide() ? 4 : 2); }

 private:
  int nc_ = 0;
  int64_t seg_ = 0;
  std::vector<int> order_, rank_;
  bool wide() const { return seg_ > 65535; }
  // First row of rank r in segment s (r in [0, nc]).
  int64_t Start(int64_t s, int r) const { return wide() ? int64_t{starts32_[s][r]} : int64_t{starts16_[s][r]}; }
  // Per segment: first row of each rank, [nc + 1]; uint16 while a segment
  // fits (segment_tokens <= 65535), else uint32.
  std::vector<std::vector<uint16_t>> starts16_;
  std::vector<std::vector<uint32_t>> starts32_;
  std::vector<int64_t> hist_;  // per (band, code), band-major: tokens over the sealed segments
  int64_t band_ = 0;           // the index's band_tokens() (0: one band)
};

// Validates a row-major [n][dim] float block (finite values).
absl::Status CheckFinite(const float* x, int64_t n, int dim, const char* what);

// Builds an index by name: "oracle", "a2ats[:centroids=4096,b=2048,iters=20]",
// "quest[:page=16]", "pq[:m=2,nbits=6]" (PQCache-style, FAISS ProductQuantizer
// on post-RoPE keys), "commvq[:stages=2,digit=6,iters=12,train=8192,seed=1]"
// (CommVQ key codes scored with the per-token RoPE rotation; codec/commvq.h).
// The layout gives head_dim and RoPE.
absl::StatusOr<std::unique_ptr<RetrievalIndex>> MakeRetrievalIndex(const std::string& spec,
                                                                   const KvLayout& layout);

}  // namespace kvrecall

#endif  // KVRECALL_INDEX_RETRIEVAL_INDEX_H_
