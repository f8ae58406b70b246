// Layout probe (issue: long-context; experiment, not a benchmark of the
// store): how many sequence blocks an A²ATS top-K step touches when blocks
// hold tokens in time order, against blocks whose tokens are sorted, within
// segments, by their code's score under the mean calibration query (a fixed
// order known at write time). Fewer blocks touched = fewer bytes a store
// must read per step.
//
//   bazel run -c opt //bench:layout_probe -- --tokens 262144 --segment 65536
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <set>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "codec/synthetic_kv.h"
#include "index/retrieval_index.h"

ABSL_FLAG(int64_t, tokens, 262144, "sequence length");
ABSL_FLAG(int64_t, segment, 65536, "tokens sorted together (layout B)");
ABSL_FLAG(int, block, 1024, "tokens per block");
ABSL_FLAG(double, topk, 0.01, "top-K per query head (fraction of tokens)");
ABSL_FLAG(int, steps, 8, "decode steps");
ABSL_FLAG(int, heads, 2, "KV heads (0: peaky, 1: flat, ...)");

namespace kvrecall {
namespace {

int Run() {
  const int64_t n = absl::GetFlag(FLAGS_tokens), seg = absl::GetFlag(FLAGS_segment);
  const int B = absl::GetFlag(FLAGS_block), steps = absl::GetFlag(FLAGS_steps);
  SyntheticConfig cfg;
  cfg.total_tokens = n;
  cfg.rope_scaling = static_cast<float>(std::max(1.0, n / 16384.0));
  const int d = cfg.head_dim, G = cfg.group_size;
  const KvLayout l = SyntheticLayout(cfg, 1);
  for (int h = 0; h < absl::GetFlag(FLAGS_heads); ++h) {
    SyntheticConfig c = cfg;
    c.seed = 1;
    SyntheticHead gen(c, h);
    const int64_t cal = std::min<int64_t>(65536, n);
    std::vector<float> kp(size_t(n) * d), kq(kp.size()), v(kp.size()), qp(size_t(cal) * G * d), qq(qp.size());
    gen.Next(cal, kp.data(), kq.data(), v.data(), qp.data(), qq.data());
    gen.Next(n - cal, kp.data() + cal * d, kq.data() + cal * d, v.data() + cal * d, nullptr, nullptr);
    std::vector<float> dqp(size_t(steps) * G * d), dqq(dqp.size());
    gen.Next(steps, nullptr, nullptr, nullptr, dqp.data(), dqq.data());
    auto idx = MakeRetrievalIndex("a2ats:centroids=4096,iters=10,b=2048,seed=1", l);
    if (!idx.ok()) return 1;
    TrainingData td;
    td.dim = d, td.k_pre = kp.data(), td.k_post = kq.data(), td.num_keys = cal;
    td.q_pre = qp.data(), td.q_post = qq.data(), td.num_queries = cal * G;
    if (!(*idx)->Train(td).ok() || !(*idx)->Add(kp.data(), kq.data(), n).ok()) return 1;
    const int K = (*idx)->num_codes();
    const uint16_t* code = (*idx)->codes();
    // The fixed order: codes by their score under the mean calibration query.
    std::vector<float> mq(d, 0.0f), mq_post(d, 0.0f), mean_table(K);
    for (int64_t i = 0; i < cal * G; ++i)
      for (int c = 0; c < d; ++c) mq[c] += qp[size_t(i) * d + c] / float(cal * G);
    (void)(*idx)->CodeScores(mq.data(), mq_post.data(), 1, absl::MakeSpan(mean_table));
    std::vector<int> rank(K);
    {
      std::vector<int> order(K);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int a, int b) { return mean_table[a] > mean_table[b]; });
      for (int r = 0; r < K; ++r) rank[order[r]] = r;
    }
    // Layout B: position of each token after sorting each segment by rank.
    std::vector<int64_t> slot(n);
    for (int64_t s0 = 0; s0 < n; s0 += seg) {
      const int64_t s1 = std::min(n, s0 + seg);
      std::vector<int64_t> t(s1 - s0);
      std::iota(t.begin(), t.end(), s0);
      std::stable_sort(t.begin(), t.end(), [&](int64_t a, int64_t b) { return rank[code[a]] < rank[code[b]]; });
      for (int64_t i = 0; i < int64_t(t.size()); ++i) slot[t[i]] = s0 + i;
    }
    const int64_t k_sel = std::max<int64_t>(1, int64_t(absl::GetFlag(FLAGS_topk) * n));
    double touched_a = 0, touched_b = 0, sel_total = 0;
    for (int s = 0; s < steps; ++s) {
      std::set<int64_t> sel;
      std::vector<float> tables(size_t(G) * K);
      const size_t q0 = size_t(s) * G * d;
      (void)(*idx)->CodeScores(dqp.data() + q0, dqq.data() + q0, G, absl::MakeSpan(tables));
      for (int g = 0; g < G; ++g) {
        const float* table = tables.data() + size_t(g) * K;
        std::vector<int64_t> t(n);
        std::iota(t.begin(), t.end(), 0);
        std::nth_element(t.begin(), t.begin() + k_sel, t.end(),
                         [&](int64_t a, int64_t b) { return table[code[a]] > table[code[b]]; });
        sel.insert(t.begin(), t.begin() + k_sel);
      }
      std::set<int64_t> ba, bb;
      for (int64_t x : sel) ba.insert(x / B), bb.insert(slot[x] / B);
      touched_a += ba.size(), touched_b += bb.size(), sel_total += sel.size();
    }
    const double blocks = double((n + B - 1) / B);
    std::printf("head %d: %.1f%% of tokens selected per step (union of %d query heads); blocks touched: time order "
                "%.1f%%, sorted by mean-query code score within %lld-token segments %.1f%%\n",
                h, 100 * sel_total / steps / n, G, 100 * touched_a / steps / blocks, static_cast<long long>(seg),
                100 * touched_b / steps / blocks);
  }
  return 0;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return kvrecall::Run();
}
