// SQuat: query-subspace-orthogonal key quantization (algorithms.md §1).
//
//   squat:bits=2,kgroup=32,vgroup=32,residual=32,rank=20,block=64,lambda=0.001,pre_rope=1,qspace=post
//
// `qspace` says which queries the subspace is built from: post-RoPE (the
// reference code's default, also for pre-RoPE keys) or pre-RoPE. A block or
// rank larger than head_dim is clamped to it.
//
// Per (layer, KV head): Q̂ = diag(s_1..r)·V_rᵀ from the prompt's queries of
// the GQA group (eigen-decomposition of QᵀQ, i.e. the SVD's right singular
// vectors scaled by the singular values), A = I + λ·Q̂ᵀQ̂. Keys are quantized
// per channel over `kgroup`-token groups, one block of `block` channels at a
// time; before quantizing block b, its channels are moved to the exact
// minimizer of eᵀAe given the errors e of the blocks already quantized:
// k_b ← k_b − (A_RR⁻¹ A_RQ e_Q)_b. Values are KIVI per-token. Storage equals
// KIVI's plus Q̂ (f16, rank × head_dim per head) in the block that built it;
// later chunks reuse the stored matrices through EncodeOptions::state.
// Sections: K scales, K codes, V scales, V codes, Q̂ (empty when reused).
#ifndef KVRECALL_CODEC_SQUAT_H_
#define KVRECALL_CODEC_SQUAT_H_

#include "codec/codec.h"

#endif  // KVRECALL_CODEC_SQUAT_H_
