// Exact scaled-dot-product attention over a set of rows, with log-sum-exp,
// the CPU reference every cache, codec and kernel is checked against.
#ifndef KVRECALL_CODEC_ATTENTION_H_
#define KVRECALL_CODEC_ATTENTION_H_

#include <cstdint>

namespace kvrecall {

// out[0..d) = softmax(scale * q·K[r]) · V[r] over the n rows r of K and V
// (row-major [n][d] with row stride `stride` floats). Returns the log-sum-exp
// of the scaled logits (-inf when n == 0, and out is zeroed). `scratch` holds
// at least n floats.
float AttendRows(const float* q, const float* k, const float* v, int64_t n, int d, int64_t stride,
                 float scale, float* out, float* scratch);

// The same for the G query heads of a group sharing one K/V (grouped-query
// attention), in one pass over K and V: rows are taken in chunks, each K and
// V row is read once for all G queries, and the softmax is computed online
// (running max and sum per query). q and out are [G][d]; lse gets G values
// (-inf and zeroed outputs when n == 0). The decode kernel a CPU full-attention
// baseline should use: G separate AttendRows passes read K and V G times.
void AttendGroup(const float* q, int G, const float* k, const float* v, int64_t n, int d, int64_t stride,
                 float scale, float* out, float* lse);

// AttendGroup over rows stored as f16 (IEEE binary16, little-endian), read in
// place: row r of K is the d halves at k + rows[r] * row_bytes, of V at
// v + rows[r] * row_bytes (unaligned is fine). Converted a few rows at a time
// into buffers that stay in L1, so it costs no decoded copy of the rows; the
// results are identical to converting every row and calling AttendGroup.
void AttendGroupHalfRows(const float* q, int G, const uint8_t* k, const uint8_t* v, const int* rows, int64_t n,
                         int d, int64_t row_bytes, float scale, float* out, float* lse);

// Scaled logits of the G query heads of a group over n rows of K (row stride
// `stride` floats): scores[g * n + r] = scale * q_g·K[r], each equal to what
// AttendGroup computes for it (the same kernel). For metrics over a whole
// sequence (recall sampling), where the logits themselves are wanted.
void GroupScores(const float* q, int G, const float* k, int64_t n, int d, int64_t stride, float scale,
                 float* scores);

// Merges a partial result (out_b, lse_b) into (out_a, lse_a) in place: the
// attention over the union of two disjoint row sets.
void MergeAttention(float* out_a, float* lse_a, const float* out_b, float lse_b, int d);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_ATTENTION_H_
