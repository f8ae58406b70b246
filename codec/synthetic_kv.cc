#include "codec/synthetic_kv.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "codec/linalg.h"
#include "codec/metrics.h"

namespace kvrecall {
namespace {

// Per-channel isotropic query noise (relative to the channel scale): puts
// about 1.5% of query energy outside the top-20 directions, as in real heads.
constexpr float kQueryNoise = 0.7f;

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace


// A standard normal deviate that depends only on (seed, stream, position,
// index): outputs never depend on which other outputs were requested.
float SyntheticHead::Noise(uint64_t stream, int64_t pos, int index) const {
  const uint64_t h = SplitMix(noise_seed_ ^ SplitMix(stream * 0x100000001b3ull ^ SplitMix(uint64_t(pos) * 4099 + index)));
  const double u1 = ((h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  const double u2 = (SplitMix(h) >> 11) * (1.0 / 9007199254740992.0);
  return static_cast<float>(std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

namespace {

float Dot(const float* a, const float* b, int d) {
  float s = 0;
  for (int i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

void Normalize(std::vector<float>* x) {
  const float n = std::sqrt(Dot(x->data(), x->data(), static_cast<int>(x->size())));
  if (n > 0) for (float& v : *x) v /= n;
}

}  // namespace

SyntheticHead::SyntheticHead(const SyntheticConfig& config, int kv_head)
    : cfg_(config),
      d_(config.head_dim),
      peaky_(kv_head % 2 == 0),
      rng_(config.seed * 0x9e3779b97f4a7c15ull + kv_head * 7919 + 1),
      noise_seed_(SplitMix(config.seed * 1000003 + kv_head)) {
  const int d = d_, pairs = d / 2, r = cfg_.key_rank, rq = cfg_.query_rank;
  std::uniform_real_distribution<float> u01(0, 1);
  // Pair scales: log-normal; outliers among the low-frequency pairs (p >= 3/4 of them).
  std::vector<float> pair_scale(pairs);
  for (float& s : pair_scale) s = std::exp(0.35f * n01_(rng_));
  std::vector<int> low;
  for (int p = pairs * 3 / 4; p < pairs - 2; ++p) low.push_back(p);
  std::shuffle(low.begin(), low.end(), rng_);
  std::vector<char> outlier(pairs, 0);
  for (int i = 0; i < std::min<int>(cfg_.outlier_pairs, low.size()); ++i) {
    outlier[low[i]] = 1;
    pair_scale[low[i]] *= std::sqrt(4.0f + 6.0f * u01(rng_));
  }
  scale_.resize(d);
  std::vector<int> pair_of(d);
  for (int p = 0; p < pairs; ++p) {
    int a, b;
    RopePair(cfg_.rope_style, d, p, &a, &b);
    scale_[a] = scale_[b] = pair_scale[p];
    pair_of[a] = pair_of[b] = p;
  }
  mu_.resize(d);
  for (int c = 0; c < d; ++c) {
    const float m = outlier[pair_of[c]] ? (1.0f + u01(rng_)) * (u01(rng_) < 0.5f ? -1.0f : 1.0f)
                                        : 0.2f * n01_(rng_);
    mu_[c] = m * scale_[c];
  }
  b_.resize(size_t(d) * r);
  for (int c = 0; c < d; ++c)
    for (int j = 0; j < r; ++j) b_[size_t(c) * r + j] = scale_[c] * n01_(rng_) / std::sqrt(float(r));
  // Queries: a subspace over the same (outlier-heavy) pairs, a mean off the keys'.
  u_.resize(size_t(d) * rq);
  for (int c = 0; c < d; ++c) {
    // The two lowest-frequency pairs carry the sink direction: queries vary
    // little there, so every query gives the sinks a similar logit.
    const float w = pair_of[c] >= pairs - 2 ? 0.1f : 1.0f;
    for (int j = 0; j < rq; ++j) u_[size_t(c) * rq + j] = w * scale_[c] * n01_(rng_);
  }
  mu_q_.resize(d);
  for (int c = 0; c < d; ++c) mu_q_[c] = 0.5f * scale_[c] * n01_(rng_);
  // The two lowest-frequency pairs carry a strong mean-query component: the
  // position-stable direction that sinks align with.
  sink_dir_.assign(d, 0.0f);
  for (int p = pairs - 2; p < pairs; ++p) {
    int a, b;
    RopePair(cfg_.rope_style, d, p, &a, &b);
    const float s = 3.0f * pair_scale[pairs - 3];
    mu_q_[a] = s;
    mu_q_[b] = 0.3f * s;
    sink_dir_[a] = mu_q_[a];
    sink_dir_[b] = mu_q_[b];
  }
  Normalize(&sink_dir_);
  head_off_.resize(size_t(cfg_.group_size) * rq);
  for (float& x : head_off_) x = 0.7f * n01_(rng_);
  bv_.resize(size_t(d) * 8);
  for (float& x : bv_) x = n01_(rng_) / std::sqrt(8.0f);
  z_.assign(r, 0.0f);
  for (float& x : z_) x = n01_(rng_);
  zv_.assign(8, 0.0f);
  w_.assign(size_t(cfg_.group_size) * rq, 0.0f);
  for (float& x : w_) x = n01_(rng_);
  inv_freq_ = RopeInvFreq(d, cfg_.rope_theta);

  // Calibrate on post-RoPE logits, as attention sees them: keys spread over
  // [sinks, T), queries just past T (T = total_tokens). First the query gain,
  // so q·k/√d has the head's target spread over keys (positional patterns
  // included), then the sink gain, so the sinks take `sink_mass` of the
  // attention of a query at T.
  {
    const int64_t T = std::max<int64_t>(cfg_.total_tokens, 64);
    const int nk = 512, nqs = 8;
    const double inv_sqrt_d = 1 / std::sqrt(double(d));
    std::uniform_int_distribution<int64_t> kpos(cfg_.sink_tokens, T - 1);
    RopeAngles ang;
    std::vector<float> keys(size_t(nk) * d);
    for (int t = 0; t < nk; ++t) {
      for (float& x : z_) x = n01_(rng_);  // stationary AR state
      float* k = keys.data() + size_t(t) * d;
      Key(k, -1 - t);
      ang.Compute(inv_freq_, double(kpos(rng_)), cfg_.rope_scaling);
      ApplyRope(k, d, cfg_.rope_style, ang);
    }
    std::vector<std::vector<float>> queries;
    std::vector<int64_t> qpos;
    for (int i = 0; i < nqs; ++i) {
      for (int g = 0; g < cfg_.group_size; ++g) {
        std::vector<float> q(d);
        for (int c = 0; c < d; ++c) {
          float sum = mu_q_[c];
          for (int j = 0; j < rq; ++j) sum += u_[size_t(c) * rq + j] * (head_off_[g * rq + j] + n01_(rng_));
          q[c] = sum + kQueryNoise * scale_[c] * n01_(rng_);
        }
        ang.Compute(inv_freq_, double(T + i), cfg_.rope_scaling);
        ApplyRope(q.data(), d, cfg_.rope_style, ang);
        queries.push_back(std::move(q));
        qpos.push_back(T + i);
      }
    }
    double var = 0;
    std::vector<std::vector<double>> logits(queries.size(), std::vector<double>(nk));
    for (size_t i = 0; i < queries.size(); ++i) {
      double m = 0, m2 = 0;
      for (int t = 0; t < nk; ++t) {
        const double l = Dot(queries[i].data(), keys.data() + size_t(t) * d, d) * inv_sqrt_d;
        logits[i][t] = l;
        m += l;
        m2 += l * l;
      }
      m /= nk;
      var += m2 / nk - m * m;
    }
    const double std_now = std::sqrt(var / queries.size());
    q_gain_ = static_cast<float>((peaky_ ? cfg_.peaky_logit_std : cfg_.flat_logit_std) / std::max(std_now, 1e-9));
    // Per calibration query: log-mean-exp of the crowd's logits.
    std::vector<double> lme(queries.size());
    for (size_t i = 0; i < queries.size(); ++i) {
      double mx = -1e300;
      for (double& l : logits[i]) mx = std::max(mx, l *= q_gain_);
      double se = 0;
      for (double l : logits[i]) se += std::exp(l - mx);
      lme[i] = mx + std::log(se / nk);
    }
    // A key μ + g·dir (post-RoPE rotation `rot` at its position) shared by
    // `copies` tokens: the g that gives it `mass` of the mean calibration
    // query's attention over T tokens (bisection; mass rises with g).
    auto solve = [&](const std::vector<float>& dir, double rot, int copies, double mass, int only_head) {
      std::vector<float> m = mu_, u = dir;
      RopeAngles r;
      r.Compute(inv_freq_, rot, cfg_.rope_scaling);
      ApplyRope(m.data(), d, cfg_.rope_style, r);
      ApplyRope(u.data(), d, cfg_.rope_style, r);
      std::vector<double> a, b, base;
      for (size_t i = 0; i < queries.size(); ++i) {
        if (only_head >= 0 && int(i) % cfg_.group_size != only_head) continue;
        a.push_back(q_gain_ * Dot(queries[i].data(), m.data(), d) * inv_sqrt_d);
        b.push_back(q_gain_ * Dot(queries[i].data(), u.data(), d) * inv_sqrt_d);
        base.push_back(lme[i] + std::log(double(T) / copies));
      }
      auto mean_mass = [&](double g) {
        double s = 0;
        for (size_t i = 0; i < a.size(); ++i) s += 1 / (1 + std::exp(-(a[i] + g * b[i] - base[i])));
        return s / a.size();
      };
      double lo = 0, hi = 1;
      while (mean_mass(hi) < mass && hi < 1e9) hi *= 2;
      for (int it = 0; it < 60; ++it) {
        const double mid = 0.5 * (lo + hi);
        (mean_mass(mid) < mass ? lo : hi) = mid;
      }
      return 0.5 * (lo + hi);
    };
    sink_gain_ = static_cast<float>(solve(sink_dir_, 0.0, std::max(cfg_.sink_tokens, 1), cfg_.sink_mass, -1));

    // Needles: positions spread over the context; each key points along its
    // query head's mean direction, pre-rotated so a query at T meets it
    // unrotated, with the strength that gives it `needle_mass` there.
    std::uniform_int_distribution<int64_t> where(cfg_.sink_tokens, std::max<int64_t>(cfg_.sink_tokens, T - 64));
    for (int i = 0; i < cfg_.needles && T > cfg_.sink_tokens + 64; ++i) {
      const int64_t p = where(rng_);
      const int g = i % cfg_.group_size;
      std::vector<float> dir(d);
      for (int c = 0; c < d; ++c) {
        float sum = mu_q_[c];
        for (int j = 0; j < rq; ++j) sum += u_[size_t(c) * rq + j] * head_off_[g * rq + j];
        dir[c] = sum;
      }
      Normalize(&dir);
      const double gain = solve(dir, double(T), 1, cfg_.needle_mass, g);
      std::vector<float> key(d);
      for (int c = 0; c < d; ++c) key[c] = mu_[c] + static_cast<float>(gain) * dir[c];
      // Pre-rotate by (T - p): R_p R_{T-p} k = R_T k.
      UnapplyRope(key.data(), d, double(p) - double(T), cfg_.rope_style, cfg_.rope_theta, cfg_.rope_scaling);
      needle_pos_.push_back(p);
      needle_head_.push_back(g);
      needle_keys_.push_back(std::move(key));
    }
  }
  std::vector<int> order(needle_pos_.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return needle_pos_[a] < needle_pos_[b]; });
  std::vector<int64_t> np;
  std::vector<int> nh;
  std::vector<std::vector<float>> nk;
  for (int i : order) {
    np.push_back(needle_pos_[i]);
    nh.push_back(needle_head_[i]);
    nk.push_back(needle_keys_[i]);
  }
  needle_pos_ = np;
  needle_head_ = nh;
  needle_keys_ = nk;
}

void SyntheticHead::Key(float* k, int64_t pos) {
  const int d = d_, r = cfg_.key_rank;
  for (int c = 0; c < d; ++c) {
    float s = mu_[c];
    const float* br = b_.data() + size_t(c) * r;
    for (int j = 0; j < r; ++j) s += br[j] * z_[j];
    k[c] = s + 0.3f * scale_[c] * Noise(4, pos, c);
  }
}

void SyntheticHead::Advance() {
  const float rho = cfg_.ar_rho, inn = std::sqrt(1 - rho * rho);
  for (size_t j = 0; j < z_.size(); ++j) z_[j] = rho * z_[j] + inn * Noise(1, pos_, int(j));
  for (size_t j = 0; j < zv_.size(); ++j) zv_[j] = 0.7f * zv_[j] + 0.714f * Noise(2, pos_, int(j));
  const float qr = cfg_.query_rho, qinn = std::sqrt(1 - qr * qr);
  for (size_t j = 0; j < w_.size(); ++j) w_[j] = qr * w_[j] + qinn * Noise(3, pos_, int(j));
}

void SyntheticHead::Next(int64_t count, float* k_pre, float* k_post, float* v, float* q_pre, float* q_post) {
  const int d = d_, rq = cfg_.query_rank, G = cfg_.group_size;
  std::vector<float> k(d), q(d);
  size_t needle = std::lower_bound(needle_pos_.begin(), needle_pos_.end(), pos_) - needle_pos_.begin();
  for (int64_t t = 0; t < count; ++t, ++pos_) {
    Advance();
    const bool want_rope = k_post || q_post;
    if (want_rope) angles_.Compute(inv_freq_, double(pos_), cfg_.rope_scaling);
    const bool sink = pos_ < cfg_.sink_tokens;
    const bool is_needle = needle < needle_pos_.size() && needle_pos_[needle] == pos_;
    if (k_pre || k_post) {
      if (sink) {
        for (int c = 0; c < d; ++c) k[c] = mu_[c] + sink_gain_ * sink_dir_[c];
      } else if (is_needle) {
        k = needle_keys_[needle];
      } else {
        Key(k.data(), pos_);
      }
      if (k_pre) std::copy(k.begin(), k.end(), k_pre + t * d);
      if (k_post) {
        std::copy(k.begin(), k.end(), k_post + t * d);
        ApplyRope(k_post + t * d, d, cfg_.rope_style, angles_);
      }
    }
    if (is_needle) ++needle;
    // Values: low rank + noise, norm ~0.4 of keys; sinks near zero.
    if (v) {
      for (int c = 0; c < d; ++c) {
        float s = 0;
        for (int j = 0; j < 8; ++j) s += bv_[size_t(c) * 8 + j] * zv_[j];
        v[t * d + c] = sink ? 0.01f * Noise(5, pos_, c) : 0.9f * (s + 0.5f * Noise(5, pos_, c));
      }
    }
    if (q_pre || q_post) {
      for (int g = 0; g < G; ++g) {
        for (int c = 0; c < d; ++c) {
          float s = mu_q_[c];
          for (int j = 0; j < rq; ++j) s += u_[size_t(c) * rq + j] * (head_off_[g * rq + j] + w_[g * rq + j]);
          q[c] = q_gain_ * (s + kQueryNoise * scale_[c] * Noise(6 + g, pos_, c));
        }
        const size_t off = (size_t(t) * G + g) * d;
        if (q_pre) std::copy(q.begin(), q.end(), q_pre + off);
        if (q_post) {
          std::copy(q.begin(), q.end(), q_post + off);
          ApplyRope(q_post + off, d, cfg_.rope_style, angles_);
        }
      }
    }
  }
}

SyntheticStats ComputeKvStats(const float* k, int n, const float* q, int nq, const int* q_pos,
                              int d, int sinks) {
  SyntheticStats s;
  std::vector<double> mean_abs(d, 0.0);
  for (int t = 0; t < n; ++t)
    for (int c = 0; c < d; ++c) mean_abs[c] += std::fabs(k[size_t(t) * d + c]) / n;
  std::vector<double> sorted = mean_abs;
  std::sort(sorted.begin(), sorted.end());
  const double median = d % 2 ? sorted[d / 2] : 0.5 * (sorted[d / 2 - 1] + sorted[d / 2]);
  s.top_channel_ratio = sorted.back() / std::max(median, 1e-12);
  auto eig = SymmetricEigen(Gram(q, nq, d), d);
  if (eig.ok()) {
    double top = 0, all = 0;
    for (int i = 0; i < d; ++i) {
      all += std::max(eig->values[i], 0.0);
      if (i < 20) top += std::max(eig->values[i], 0.0);
    }
    s.query_top20_energy = all > 0 ? top / all : 0;
  }
  int rows = 0;
  const double scale = 1 / std::sqrt(double(d));
  for (int i = 0; i < nq; ++i) {
    if (q_pos[i] < n / 4) continue;  // back 3/4 of the rows (fixture: rows 8..31 of 32)
    std::vector<double> p = AttentionProbs(q + size_t(i) * d, q_pos[i], k, n, d, scale);
    for (int j = 0; j < std::min(sinks, n); ++j) s.sink_mass += p[j];
    std::vector<double> sp(p.begin(), p.begin() + q_pos[i] + 1);
    const int top = std::max(1, static_cast<int>(std::ceil(0.03 * sp.size())));
    std::partial_sort(sp.begin(), sp.begin() + top, sp.end(), std::greater<double>());
    s.top3pct_mass += std::accumulate(sp.begin(), sp.begin() + top, 0.0);
    ++rows;
  }
  if (rows) {
    s.sink_mass /= rows;
    s.top3pct_mass /= rows;
  }
  return s;
}

}  // namespace kvrecall
