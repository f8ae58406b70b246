// CommVQ (algorithms.md §5): RoPE-commutative residual VQ for keys and
// greedy residual VQ for values.
//
// Keys. Per (layer, KV head), the pre-RoPE key divided by `prescale` (the
// norm of the whole layer's key for that token) is coded by R residual
// stages. Stage r's codebook has 2^(2c) entries built from 2^c learned
// complex vectors z_{r,a} (one complex number per RoPE pair): entry (A, B)
// is, for pair p, z_{A,p} + i·z_{B,p}. A complex number times a rotation is
// a rotation times it, so the post-RoPE key is RoPE(Σ_r codeword) and
// q·k = prescale · Σ_p Re(conj(q_p) · e^{iθ_p t} · Σ_r (z_{r,A_r,p} + i z_{r,B_r,p})):
// a per-query table conj(q_p)·z_{r,a,p}, summed over stages per token, then
// one rotation per pair. Training is EM per stage with soft assignments,
// an exponentially annealed temperature and the closed-form M-step (a
// weighted least-squares solve shared by all pairs); encoding is greedy.
//
// Values. The paper trains a neural value encoder (LayerNorm → MLP →
// Gumbel-softmax binary codes) with the frozen LLM for 100K steps. That
// encoder is NOT implemented here: values use greedy residual VQ (FAISS
// k-means per stage on the residual) of v/σ (σ = per-channel mean |v| from
// calibration) divided by the layer's norm, at the same bits per element.
//
// Calibration (codebooks for every layer and head) is trained once per
// model from KV of other text, serialized in a versioned, checksummed
// format and identified by the XXH3-64 of its bytes. The codec's parameters
// name that hash (`commvq:cal=<16 hex>`), so the model fingerprint changes
// with the calibration; decoding a block needs the calibration registered
// in the process (RegisterCommVqCalibration), as a server loads a model's
// artifacts.
#ifndef KVRECALL_CODEC_COMMVQ_H_
#define KVRECALL_CODEC_COMMVQ_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "codec/kv_layout.h"

namespace kvrecall {

struct CommVqTrainOptions {
  int stages = 21;         // key stages (21 × 12 bits / 128 dims = 1.97 bits)
  int digit_bits = 6;      // 2^c complex vectors per stage; a code has 2c bits
  int iters = 12;          // EM iterations per stage
  double tau_start = 3e-2; // temperature, in units of the mean squared residual
  double tau_end = 1e-4;
  int64_t max_train = 8192;  // training vectors per head (a random subset)
  uint64_t seed = 1;
  int threads = 0;         // 0: hardware concurrency
};

// One head's RoPE-commutative residual key codebook.
class CommVqKeyCodebook {
 public:
  // x: [n][dim] keys, already divided by their prescale. `style` fixes the
  // channel pairs (kNone pairs like kHalfSplit and never rotates).
  static absl::StatusOr<CommVqKeyCodebook> Train(int dim, RopeStyle style, const float* x, int64_t n,
                                                 const CommVqTrainOptions& options);

  int dim() const { return d_; }
  int stages() const { return stages_; }
  int digit_bits() const { return digit_bits_; }
  int code_bits() const { return 2 * digit_bits_; }
  RopeStyle style() const { return style_; }

  // Greedy stage-by-stage nearest codeword; codes[stages] = (A << c) | B.
  void Encode(const float* x, uint32_t* codes) const;
  // Σ_r codeword_r in channel order.
  void Decode(const uint32_t* codes, float* x) const;

  // Scoring straight from codes. QueryTable fills table_size() floats for a
  // post-RoPE query; Score gives q·RoPE(Decode(codes)) for a token whose
  // RoPE rotation of pair p is (cos[p], sin[p]).
  size_t table_size() const { return size_t(stages_) * entries() * 4 * P_; }
  void QueryTable(const float* q, float* table) const;
  float Score(const float* table, const uint32_t* codes, const float* cos, const float* sin) const;

  void Serialize(std::string* out) const;
  // Reads one codebook from `in` at *offset; DATA_LOSS on any inconsistency.
  static absl::StatusOr<CommVqKeyCodebook> Parse(absl::string_view in, size_t* offset);

 private:
  int entries() const { return 1 << digit_bits_; }
  void Derive();  // norms and cross terms from z_
  void Pair(int p, int* a, int* b) const;
  // α_a = x·z_a and β_b = x·(i z_b) for one stage; x planar [re P][im P].
  void Project(int stage, const float* xp, float* alpha, float* beta) const;
  int Nearest(int stage, const float* alpha, const float* beta) const;

  int d_ = 0, P_ = 0, stages_ = 0, digit_bits_ = 0;
  RopeStyle style_ = RopeStyle::kHalfSplit;
  std::vector<float> z_;      // [stages][entries][2][P]: Re then Im of z_{r,a,p}
  std::vector<float> norm_;   // [stages][entries]: |z_a|²
  std::vector<float> cross_;  // [stages][entries][entries]: 2·z_a·(i z_b) + |z_a|² + |z_b|²
};

// Greedy residual VQ of one head's normalized values.
class ResidualVqCodebook {
 public:
  static absl::StatusOr<ResidualVqCodebook> Train(int dim, int stages, int bits, const float* x, int64_t n,
                                                  uint64_t seed);
  int dim() const { return d_; }
  int stages() const { return stages_; }
  int bits() const { return bits_; }
  // x: [n][dim] → codes [n][stages].
  void Encode(const float* x, int64_t n, uint32_t* codes) const;
  void Decode(const uint32_t* codes, float* x) const;
  void Serialize(std::string* out) const;
  static absl::StatusOr<ResidualVqCodebook> Parse(absl::string_view in, size_t* offset);

 private:
  int d_ = 0, stages_ = 0, bits_ = 0;
  std::vector<float> c_;  // [stages][2^bits][dim]
};

struct CommVqConfig {
  int kstages = 21;
  int kdigit = 6;   // key code bits per stage = 2·kdigit
  int vstages = 32;
  int vbits = 8;    // value code bits per stage
  CommVqTrainOptions train;
  // The codec's streaming window (engine caches): full-precision recent
  // tokens and tokens compressed at a time.
  int residual = 32;
  int chunk = 32;
};

// Stage counts for a target bits per element at head_dim d: keys
// round(bits·d / (2·kdigit)), values round(bits·d / vbits), at least 1.
CommVqConfig CommVqConfigForBits(double bits, int head_dim, int kdigit = 6, int vbits = 8);

// Codebooks for every (layer, KV head) of a model.
struct CommVqCalibration {
  KvLayout layout;  // head_dim, num_kv_heads, RoPE
  int num_layers = 0;
  CommVqConfig config;
  std::vector<CommVqKeyCodebook> keys;     // [layer × kv_heads]
  std::vector<ResidualVqCodebook> values;  // [layer × kv_heads]
  std::vector<float> vsigma;               // [layer × kv_heads][head_dim]
  uint64_t hash = 0;                       // XXH3-64 of Serialize()'s bytes

  // Codebook bytes (fixed, per model): what the GPU and store must hold.
  int64_t FixedBytes() const;
};

// Per-layer calibration KV: k_pre[l], v[l] are [tokens[l]][kv_heads][head_dim].
struct CommVqTrainingSet {
  std::vector<std::vector<float>> k_pre, v;
};

// Trains every layer's codebooks; `progress` (may be null) is called after
// each (layer, head) with (done, total).
absl::StatusOr<std::shared_ptr<const CommVqCalibration>> TrainCommVqCalibration(
    const KvLayout& layout, int num_layers, const CommVqTrainingSet& data, const CommVqConfig& config,
    void (*progress)(int done, int total) = nullptr);

// Versioned, checksummed bytes (doc/formats.md, "CommVQ calibration v1").
std::string SerializeCommVqCalibration(const CommVqCalibration& cal);
absl::StatusOr<std::shared_ptr<const CommVqCalibration>> ParseCommVqCalibration(absl::string_view bytes);

// Process-wide registry the "commvq" codec looks calibrations up in.
void RegisterCommVqCalibration(std::shared_ptr<const CommVqCalibration> cal);
std::shared_ptr<const CommVqCalibration> FindCommVqCalibration(uint64_t hash);

// The codec spec for a registered calibration: "commvq:cal=<hex>,...".
std::string CommVqCodecSpec(const CommVqCalibration& cal);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_COMMVQ_H_
