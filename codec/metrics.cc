#include "codec/metrics.h"

#include "codec/attention.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

namespace kvrecall {
namespace {

double DotD(const float* a, const float* b, int d) {
  double s = 0;
  for (int c = 0; c < d; ++c) s += double{a[c]} * b[c];
  return s;
}

// Scaled logits of query q over keys 0..last, softmaxed into p (size last+1).
void Softmax(const float* q, int last, const float* k, int d, double scale, std::vector<double>* p) {
  p->resize(last + 1);
  double mx = -std::numeric_limits<double>::infinity();
  for (int j = 0; j <= last; ++j) mx = std::max(mx, (*p)[j] = scale * DotD(q, k + int64_t(j) * d, d));
  double sum = 0;
  for (int j = 0; j <= last; ++j) sum += (*p)[j] = std::exp((*p)[j] - mx);
  for (double& x : *p) x /= sum;
}

}  // namespace

double RelativeError(const float* x, const float* x_hat, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = double{x[i]} - x_hat[i];
    num += e * e;
    den += double{x[i]} * x[i];
  }
  if (den == 0) return num == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

double MeanSquaredError(const float* x, const float* x_hat, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = double{x[i]} - x_hat[i];
    s += e * e;
  }
  return n ? s / n : 0;
}

LogitError ComputeLogitError(const float* q, int nq, const int* q_pos, const float* k,
                             const float* k_hat, int n, int d) {
  LogitError r;
  double sq = 0, ab = 0;
  std::vector<float> e(d);
  for (int j = 0; j < n; ++j) {
    for (int c = 0; c < d; ++c) e[c] = k_hat[int64_t(j) * d + c] - k[int64_t(j) * d + c];
    for (int i = 0; i < nq; ++i) {
      if (q_pos && j > q_pos[i]) continue;
      const double x = DotD(q + int64_t(i) * d, e.data(), d);
      sq += x * x;
      ab += std::fabs(x);
      ++r.pairs;
    }
  }
  if (r.pairs) {
    r.rms = std::sqrt(sq / r.pairs);
    r.mae = ab / r.pairs;
  }
  return r;
}

std::vector<double> AttentionProbs(const float* q, int q_pos, const float* k, int n, int d,
                                   double scale) {
  std::vector<double> p;
  Softmax(q, std::min(q_pos, n - 1), k, d, scale, &p);
  p.resize(n, 0.0);
  return p;
}

AttentionError CompareAttention(const float* q, int nq, const int* q_pos, const float* k,
                                const float* k_hat, const float* v, const float* v_hat, int n,
                                int d, double scale) {
  AttentionError r;
  std::vector<double> p, ph;
  double out_num = 0, out_den = 0;
  for (int i = 0; i < nq; ++i) {
    const int last = std::min(q_pos[i], n - 1);
    if (last < 0) continue;
    Softmax(q + int64_t(i) * d, last, k, d, scale, &p);
    Softmax(q + int64_t(i) * d, last, k_hat, d, scale, &ph);
    double l1 = 0, kl = 0;
    for (int j = 0; j <= last; ++j) {
      l1 += std::fabs(p[j] - ph[j]);
      if (p[j] > 0) kl += p[j] * (std::log(p[j]) - std::log(std::max(ph[j], 1e-300)));
    }
    r.prob_l1_sum += l1;
    r.kl_mean += kl;
    if (v && v_hat) {
      for (int c = 0; c < d; ++c) {
        double o = 0, oh = 0;
        for (int j = 0; j <= last; ++j) {
          o += p[j] * v[int64_t(j) * d + c];
          oh += ph[j] * v_hat[int64_t(j) * d + c];
        }
        out_num += (o - oh) * (o - oh);
        out_den += o * o;
      }
    }
    ++r.queries;
  }
  if (r.queries) {
    r.prob_l1_mean = r.prob_l1_sum / r.queries;
    r.kl_mean /= r.queries;
  }
  r.output_rel = out_den > 0 ? std::sqrt(out_num / out_den) : 0;
  return r;
}

SelectionRecall ComputeSelectionRecall(const std::vector<double>& p, const std::vector<int>& selected) {
  SelectionRecall r;
  const int n = static_cast<int>(p.size());
  std::vector<char> in(n, 0);
  int kcount = 0;
  for (int s : selected) {
    if (s >= 0 && s < n && !in[s]) {
      in[s] = 1;
      ++kcount;
      r.mass_recall += p[s];
    }
  }
  if (kcount == 0) return r;
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + kcount, order.end(),
                    [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  int hit = 0;
  for (int i = 0; i < kcount; ++i) hit += in[order[i]];
  r.topk_recall = static_cast<double>(hit) / kcount;
  return r;
}

std::vector<SelectionRecall> GroupSelectionRecall(const float* q, int G, const float* k, int64_t n, int d,
                                                  int64_t stride, float scale, const std::vector<int>& selected) {
  std::vector<SelectionRecall> out(std::max(G, 0));
  if (n <= 0 || G <= 0) return out;
  std::vector<int64_t> sel;  // distinct, in range, ascending
  sel.reserve(selected.size());
  for (int s : selected) {
    if (s >= 0 && s < n) sel.push_back(s);
  }
  std::sort(sel.begin(), sel.end());
  sel.erase(std::unique(sel.begin(), sel.end()), sel.end());
  const int64_t kcount = static_cast<int64_t>(sel.size());
  if (kcount == 0) return out;
  std::vector<float> logits(size_t(G) * n), copy;
  GroupScores(q, G, k, n, d, stride, scale, logits.data());
  for (int g = 0; g < G; ++g) {
    const float* s = logits.data() + size_t(g) * n;
    const float mx = *std::max_element(s, s + n);
    double total = 0, picked = 0;
    for (int64_t j = 0; j < n; ++j) total += std::exp(s[j] - mx);
    for (int64_t j : sel) picked += std::exp(s[j] - mx);
    // The K-th largest logit; the top K are those above it and the earliest
    // of those equal to it.
    copy.assign(s, s + n);
    std::nth_element(copy.begin(), copy.begin() + (kcount - 1), copy.end(), std::greater<float>());
    const float t = copy[kcount - 1];
    int64_t above = 0, hit = 0;
    for (int64_t j = 0; j < n; ++j) above += s[j] > t;
    for (int64_t j : sel) hit += s[j] > t;
    int64_t quota = kcount - above;  // tokens at the threshold that make the top K, earliest first
    size_t next = 0;  // walks sel alongside
    for (int64_t j = 0; j < n && quota > 0; ++j) {
      if (s[j] != t) continue;
      --quota;
      while (next < sel.size() && sel[next] < j) ++next;
      if (next < sel.size() && sel[next] == j) ++hit;
    }
    out[g].mass_recall = picked / total;
    out[g].topk_recall = static_cast<double>(hit) / kcount;
  }
  return out;
}

double QueryWeightedDistortion(const float* q, int nq, const float* k, const float* k_hat, int n,
                               int d) {
  // H = (1/nq) Σ q qᵀ
  std::vector<double> h(size_t(d) * d, 0.0);
  for (int i = 0; i < nq; ++i) {
    const float* qi = q + int64_t(i) * d;
    for (int a = 0; a < d; ++a) {
      for (int b = 0; b < d; ++b) h[size_t(a) * d + b] += double{qi[a]} * qi[b];
    }
  }
  for (double& x : h) x /= std::max(nq, 1);
  double total = 0;
  std::vector<double> e(d);
  for (int j = 0; j < n; ++j) {
    for (int c = 0; c < d; ++c) e[c] = double{k_hat[int64_t(j) * d + c]} - k[int64_t(j) * d + c];
    double s = 0;
    for (int a = 0; a < d; ++a) {
      double row = 0;
      for (int b = 0; b < d; ++b) row += h[size_t(a) * d + b] * e[b];
      s += e[a] * row;
    }
    total += s;
  }
  return n ? total / n : 0;
}

}  // namespace kvrecall
