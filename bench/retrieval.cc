// Retrieval quality and speed against exact attention (issue: index).
//
//   bazel run -c opt //bench:retrieval -- --out_dir bench/results
//   bazel run -c opt //bench:retrieval -- --tokens 131072 --topk 0.03 --method a2ats
//
// For each method and K (fraction of the context), on the synthetic
// generator's 128-d heads (seeds x peaky/flat, contexts --tokens) and on
// stories260K traces: top-K recall and attention-mass recall of the selected
// set (sinks + window + union of the group's top-K) against exact attention
// of decode queries, and the relative error of exact attention over the
// selected rows. Search latency per query head (one thread) with FAISS
// IndexPQ and IndexIVFPQ over the same keys (inner product, same 12-bit
// codes) measured in the same run, 1 thread and all threads. With --method,
// the last line is: mass_recall <v> search_us <v> faiss_pq_us <v>.
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "bench/results_io.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "codec/attention.h"
#include "codec/metrics.h"
#include "codec/rope.h"
#include "codec/synthetic_kv.h"
#include "common/shared_data.h"
#include "engine/eval.h"
#include "index/retrieval_index.h"

ABSL_FLAG(std::string, tokens, "32768,131072", "synthetic context lengths");
ABSL_FLAG(std::string, topk, "0.01,0.03,0.1", "K as fractions of the context");
ABSL_FLAG(std::string, method, "", "one method only (oracle, a2ats, quest, pq, commvq, faiss_pq, faiss_ivfpq; or wrope: A²ATS without its quantizer)");
ABSL_FLAG(int, commvq_stages, 2, "CommVQ scorer stages (12 bits each + a 16-bit norm per token)");
ABSL_FLAG(int, seeds, 3, "synthetic seeds");
ABSL_FLAG(int, steps, 8, "decode steps (queries) per head");
ABSL_FLAG(int, centroids, 4096, "A²ATS codebook size");
ABSL_FLAG(double, a2ats_b, 2048, "A²ATS windowed-RoPE relative position b");
ABSL_FLAG(int, head_pair, 0, "generator KV heads 2p (peaky) and 2p+1 (flat) of each seed");
ABSL_FLAG(int, wrope_buckets, 0,
          "with --method wrope: instead of the fixed b, score each token as if at the middle of its bucket "
          "(the context cut into this many equal buckets), (R_(pos-mid) q)·k over exact keys: what position-aware "
          "tables could recover of windowed RoPE's loss (0 = off)");
ABSL_FLAG(int64_t, a2ats_band, 0, "A²ATS position bands of this many tokens, one table each (0 = one table)");
ABSL_FLAG(std::string, a2ats_extra, "", "more A²ATS spec parameters, e.g. slow=6.28,horizon=524288");
ABSL_FLAG(int, a2ats_outliers, 0, "A²ATS outlier slots (codes that hold one outlier key each; 0 = none)");
ABSL_FLAG(int, train_tokens, 65536, "calibration tokens (keys and queries) per head");
ABSL_FLAG(double, rope_scaling, 0,
          "RoPE position scaling of the synthetic heads; 0 = Llama-3.1-like max(1, tokens / 16384)");
ABSL_FLAG(int, trace_stories, 10, "stories260K stories traced for the real-data section (0 = skip)");
ABSL_FLAG(std::string, out_dir, "", "write retrieval.md/.csv here (relative to the workspace)");

namespace kvrecall {
namespace {

using Clock = std::chrono::steady_clock;
double Us(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::micro>(b - a).count(); }

struct Acc {
  double topk = 0, mass = 0, out = 0, search_us = 0, search_all_us = 0;
  int n = 0, timed = 0;
  // Planted keys aimed at the query head: distance to the context's end -> (selected, total).
  std::map<int64_t, std::pair<int, int>> needle_by_distance;
  double bits = 0;
};

struct Head {
  int n = 0, d = 128, g = 4, steps = 0;
  KvLayout layout;
  std::vector<float> k_pre, k_post, v, cal_q_pre, cal_q_post, dq_pre, dq_post;
  int64_t cal = 0;
  std::vector<int64_t> needle_pos;  // the generator's planted keys and the query head each is aimed at
  std::vector<int> needle_head;
};

Head MakeHead(uint64_t seed, int kv_head, int n, int steps, int64_t train) {
  Head h;
  SyntheticConfig c;
  c.seed = seed;
  c.total_tokens = n;
  const double scaling = absl::GetFlag(FLAGS_rope_scaling);
  c.rope_scaling = static_cast<float>(scaling > 0 ? scaling : std::max(1.0, n / 16384.0));
  SyntheticHead gen(c, kv_head);
  h.n = n, h.d = c.head_dim, h.g = c.group_size, h.steps = steps;
  h.layout.num_layers = 1, h.layout.num_q_heads = h.g, h.layout.num_kv_heads = 1, h.layout.head_dim = h.d;
  h.layout.rope_style = c.rope_style, h.layout.rope_theta = c.rope_theta, h.layout.rope_scaling = c.rope_scaling;
  h.k_pre.resize(size_t(n) * h.d), h.k_post.resize(h.k_pre.size()), h.v.resize(h.k_pre.size());
  h.cal = std::min<int64_t>(train, n);
  h.cal_q_pre.resize(size_t(h.cal) * h.g * h.d), h.cal_q_post.resize(h.cal_q_pre.size());
  gen.Next(h.cal, h.k_pre.data(), h.k_post.data(), h.v.data(), h.cal_q_pre.data(), h.cal_q_post.data());
  const size_t off = size_t(h.cal) * h.d;
  gen.Next(n - h.cal, h.k_pre.data() + off, h.k_post.data() + off, h.v.data() + off, nullptr, nullptr);
  h.dq_pre.resize(size_t(steps) * h.g * h.d), h.dq_post.resize(h.dq_pre.size());
  gen.Next(steps, nullptr, nullptr, nullptr, h.dq_pre.data(), h.dq_post.data());
  h.needle_pos = gen.needle_positions(), h.needle_head = gen.needle_heads();
  return h;
}

// Relative error of attention over `sel` (exact K/V rows) vs all rows.
double OutputError(const float* q, const Head& h, const std::vector<int64_t>& sel) {
  const float scale = 1 / std::sqrt(float(h.d));
  std::vector<float> scratch(h.n), full(h.d), part(h.d), ks(sel.size() * h.d), vs(ks.size());
  AttendRows(q, h.k_post.data(), h.v.data(), h.n, h.d, h.d, scale, full.data(), scratch.data());
  for (size_t i = 0; i < sel.size(); ++i) {
    std::copy_n(h.k_post.data() + sel[i] * h.d, h.d, ks.data() + i * h.d);
    std::copy_n(h.v.data() + sel[i] * h.d, h.d, vs.data() + i * h.d);
  }
  AttendRows(q, ks.data(), vs.data(), sel.size(), h.d, h.d, scale, part.data(), scratch.data());
  return RelativeError(full.data(), part.data(), h.d);
}

void Measure(const Head& h, const std::vector<int64_t>& sel, const float* q_post_group, Acc* a) {
  std::vector<int> ids(sel.begin(), sel.end());
  for (int gq = 0; gq < h.g; ++gq) {
    const float* q = q_post_group + size_t(gq) * h.d;
    std::vector<double> p = AttentionProbs(q, h.n - 1, h.k_post.data(), h.n, h.d, 1 / std::sqrt(double(h.d)));
    const SelectionRecall r = ComputeSelectionRecall(p, ids);
    a->topk += r.topk_recall, a->mass += r.mass_recall, a->out += OutputError(q, h, sel);
    ++a->n;
    for (size_t i = 0; i < h.needle_pos.size(); ++i) {
      if (h.needle_head[i] != gq) continue;
      auto& [found, total] = a->needle_by_distance[h.n - h.needle_pos[i]];
      found += std::binary_search(sel.begin(), sel.end(), h.needle_pos[i]) ? 1 : 0, ++total;
    }
  }
}

std::vector<double> Floats(const std::string& s) {
  std::vector<double> out;
  for (absl::string_view x : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    double v;
    if (absl::SimpleAtod(x, &v)) out.push_back(v);
  }
  return out;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  using namespace kvrecall;
  absl::ParseCommandLine(argc, argv);
  const std::vector<double> tokens = Floats(absl::GetFlag(FLAGS_tokens)), fracs = Floats(absl::GetFlag(FLAGS_topk));
  std::vector<std::string> methods = {"oracle", "a2ats", "quest", "pq", "commvq", "faiss_pq", "faiss_ivfpq"};
  if (!absl::GetFlag(FLAGS_method).empty()) methods = {absl::GetFlag(FLAGS_method)};
  const int all_threads = omp_get_max_threads();
  // results[(tokens, head kind, method, frac)]
  std::map<std::tuple<int, int, std::string, double>, Acc> res;
  SelectionConfig base;
  base.sinks = 4;
  base.window = 64;
  for (double nt : tokens) {
    const int n = static_cast<int>(nt);
    for (int seed = 1; seed <= absl::GetFlag(FLAGS_seeds); ++seed) {
      for (int kind = 0; kind < 2; ++kind) {
        const Head h = MakeHead(seed, kind + 2 * absl::GetFlag(FLAGS_head_pair), n, absl::GetFlag(FLAGS_steps),
                                absl::GetFlag(FLAGS_train_tokens));
        std::fprintf(stderr, "[retrieval] %d tokens, seed %d, %s head\n", n, seed, kind == 0 ? "peaky" : "flat");
        for (const std::string& m : methods) {
          std::unique_ptr<RetrievalIndex> idx;
          std::unique_ptr<faiss::Index> peer;
          std::unique_ptr<faiss::IndexFlatIP> coarse;
          double bits = 12;
          const auto t0 = Clock::now();
          if (m == "faiss_pq" || m == "faiss_ivfpq") {
            if (m == "faiss_pq") {
              peer = std::make_unique<faiss::IndexPQ>(h.d, 2, 6, faiss::METRIC_INNER_PRODUCT);
            } else {
              coarse = std::make_unique<faiss::IndexFlatIP>(h.d);
              auto* ivf = new faiss::IndexIVFPQ(coarse.get(), h.d, 1024, 2, 6, faiss::METRIC_INNER_PRODUCT);
              ivf->nprobe = 64;
              peer.reset(ivf);
            }
            peer->train(h.cal, h.k_post.data());
            peer->add(h.n, h.k_post.data());
          } else {
            std::string spec = m == "a2ats"    ? absl::StrCat("a2ats:centroids=", absl::GetFlag(FLAGS_centroids), ",iters=10,b=",
                                                             absl::GetFlag(FLAGS_a2ats_b), ",outliers=",
                                                             absl::GetFlag(FLAGS_a2ats_outliers), ",band=",
                                                             absl::GetFlag(FLAGS_a2ats_band),
                                                             absl::GetFlag(FLAGS_a2ats_extra).empty() ? "" : ",",
                                                             absl::GetFlag(FLAGS_a2ats_extra))
                               : m == "pq"     ? "pq:m=2,nbits=6"
                               : m == "commvq" ? absl::StrCat("commvq:iters=8,stages=", absl::GetFlag(FLAGS_commvq_stages))
                               : m == "wrope"  ? "oracle"
                                               : m;
            idx = std::move(*MakeRetrievalIndex(spec, h.layout));
            TrainingData t;
            t.dim = h.d;
            t.k_pre = h.k_pre.data(), t.k_post = h.k_post.data(), t.num_keys = h.cal;
            t.q_pre = h.cal_q_pre.data(), t.q_post = h.cal_q_post.data(), t.num_queries = h.cal * h.g;
            if (absl::Status s = idx->Train(t); !s.ok()) {
              std::fprintf(stderr, "%s: %s\n", m.c_str(), s.ToString().c_str());
              continue;
            }
            // wrope: A²ATS's score without its quantizer, (R_b q)·k over exact
            // pre-RoPE keys (the oracle's dot product over pre-RoPE keys,
            // given R_b-rotated queries): what windowed RoPE alone costs.
            // With buckets: (R_(pos-mid) q_pre)·k_pre = q_post·(R_mid k_pre),
            // so the keys are added rotated to their bucket's middle and the
            // queries are the post-RoPE ones.
            const int buckets = absl::GetFlag(FLAGS_wrope_buckets);
            std::vector<float> at_mid;
            if (m == "wrope" && buckets > 0) {
              at_mid = h.k_pre;
              const int64_t width = (h.n + buckets - 1) / buckets;
              for (int64_t i = 0; i < h.n; ++i) {
                const int64_t b = i / width, mid = std::min(b * width + width / 2, int64_t(h.n) - 1);
                ApplyRope(at_mid.data() + i * h.d, h.layout, double(mid));
              }
            }
            const float* added = !at_mid.empty() ? at_mid.data() : m == "wrope" ? h.k_pre.data() : h.k_post.data();
            if (absl::Status s = idx->Add(h.k_pre.data(), added, h.n); !s.ok()) {
              std::fprintf(stderr, "%s: %s\n", m.c_str(), s.ToString().c_str());
              continue;
            }
            bits = idx->BitsPerToken();
          }
          std::fprintf(stderr, "  %s built in %.1f s\n", m.c_str(), Us(t0, Clock::now()) / 1e6);
          if (const int slots = absl::GetFlag(FLAGS_a2ats_outliers); m == "a2ats" && slots > 0 && idx) {
            const int first_slot = idx->num_codes() - slots;
            int used = 0, needles = 0;
            for (int64_t i = 0; i < idx->size(); ++i) used += idx->codes()[i] >= first_slot ? 1 : 0;
            for (int64_t p : h.needle_pos) needles += idx->codes()[p] >= first_slot ? 1 : 0;
            std::fprintf(stderr, "  a2ats outlier slots: %d of %d used, %d of %zu needles in them\n", used, slots,
                         needles, h.needle_pos.size());
          }
          for (double f : fracs) {
            Acc& a = res[{n, kind, m, f}];
            a.bits = bits;
            SelectionConfig cfg = base;
            cfg.topk_fraction = f;
            const int64_t k = static_cast<int64_t>(std::ceil(f * n));
            for (int step = 0; step < h.steps; ++step) {
              const float* qp = h.dq_pre.data() + size_t(step) * h.g * h.d;
              const float* qq = h.dq_post.data() + size_t(step) * h.g * h.d;
              std::vector<int64_t> sel;
              if (idx) {
                auto s0 = Clock::now();
                std::vector<float> rotated;
                const float* qs = qq;  // the queries the index scores with
                if (m == "wrope" && absl::GetFlag(FLAGS_wrope_buckets) == 0) {
                  rotated.assign(qp, qp + size_t(h.g) * h.d);
                  for (int gq = 0; gq < h.g; ++gq) {
                    ApplyRope(rotated.data() + size_t(gq) * h.d, h.layout, absl::GetFlag(FLAGS_a2ats_b));
                  }
                  qs = rotated.data();
                }
                auto r = SelectTokens(*idx, qp, qs, h.g, n - 1, cfg);
                a.search_us += Us(s0, Clock::now()) / h.g;
                sel = *r;
                SelectionConfig all = cfg;
                all.threads = 0;
                s0 = Clock::now();
                auto r2 = SelectTokens(*idx, qp, qs, h.g, n - 1, all);
                a.search_all_us += Us(s0, Clock::now()) / h.g;
                if (!r2.ok() || *r2 != sel) std::fprintf(stderr, "%s: threaded selection differs\n", m.c_str());
              } else {
                // FAISS peers: top-(k + sinks + window) by inner product, then
                // the same sinks/window rule.
                std::vector<char> chosen(n, 0);
                for (int i = 0; i < base.sinks; ++i) chosen[i] = 1;
                for (int i = n - base.window; i < n; ++i) chosen[i] = 1;
                const int64_t kk = k + base.sinks + base.window;
                std::vector<float> dist(kk * h.g);
                std::vector<faiss::Index::idx_t> ids(kk * h.g);
                omp_set_num_threads(1);
                auto s0 = Clock::now();
                peer->search(h.g, qq, kk, dist.data(), ids.data());
                a.search_us += Us(s0, Clock::now()) / h.g;
                omp_set_num_threads(all_threads);
                s0 = Clock::now();
                peer->search(h.g, qq, kk, dist.data(), ids.data());
                a.search_all_us += Us(s0, Clock::now()) / h.g;
                for (int gq = 0; gq < h.g; ++gq) {
                  int64_t taken = 0;
                  for (int64_t j = 0; j < kk && taken < k; ++j) {
                    const auto id = ids[gq * kk + j];
                    if (id < base.sinks || id >= n - base.window || id < 0) continue;
                    chosen[id] = 1;
                    ++taken;
                  }
                }
                for (int i = 0; i < n; ++i) if (chosen[i]) sel.push_back(i);
              }
              ++a.timed;
              Measure(h, sel, qq, &a);
            }
          }
        }
      }
    }
  }
  // Real data: stories260K traces. Indexes per (layer, KV head) are trained on
  // stories 980..999 and evaluated on stories 0..N-1 with the queries of each
  // story's last 8 positions (causal attention over everything before).
  std::map<std::tuple<std::string, double>, Acc> real;
  SelectionConfig story_sel;
  story_sel.sinks = 1;
  story_sel.window = 16;
  auto data = FindDataDir();
  const int ns = absl::GetFlag(FLAGS_trace_stories);
  if (data.ok() && ns > 0 && absl::GetFlag(FLAGS_method).empty()) {
    auto model = Model::Load(Env::Default(), *data + "/stories260K.bin");
    auto tok = Tokenizer::Load(Env::Default(), *data + "/tok512.bin", (*model)->config().vocab_size);
    auto stories = LoadStories(Env::Default(), *data + "/tinystories_valid_first1000.txt");
    std::vector<int> eval_ids, cal_ids;
    for (int i = 0; i < ns; ++i) eval_ids.push_back(i);
    for (int i = 980; i < 1000; ++i) cal_ids.push_back(i);
    auto eval = TraceStories(**model, **tok, *stories, eval_ids, {}, 512);
    auto cal = TraceStories(**model, **tok, *stories, cal_ids, {}, 512);
    const KvLayout l = eval->layout;
    const int H = l.num_kv_heads, G = l.group_size(), d = l.head_dim, Hq = l.num_q_heads;
    // Rows of head h from [t][heads][d] records.
    auto rows = [&](const std::vector<float>& x, int heads, int h, uint32_t t0, uint32_t t1) {
      std::vector<float> out;
      for (uint32_t t = t0; t < t1; ++t) out.insert(out.end(), x.begin() + (size_t(t) * heads + h) * d, x.begin() + (size_t(t) * heads + h + 1) * d);
      return out;
    };
    for (const std::string m : {"oracle", "a2ats:centroids=64,b=64", "quest:page=16", "pq:m=2,nbits=4",
                                "commvq:stages=1,digit=3"}) {
      for (int layer = 0; layer < l.num_layers; ++layer) {
        for (int h = 0; h < H; ++h) {
          std::vector<float> kp, kq, qp, qq;
          for (const KvTraceRecord& r : cal->records) {
            if (static_cast<int>(r.layer) != layer) continue;
            auto a = rows(r.k_pre_rope, H, h, 0, r.tokens), b = rows(r.k, H, h, 0, r.tokens);
            kp.insert(kp.end(), a.begin(), a.end()), kq.insert(kq.end(), b.begin(), b.end());
            for (int g = 0; g < G; ++g) {
              auto c = rows(r.q_pre_rope, Hq, h * G + g, 0, r.tokens), e = rows(r.q, Hq, h * G + g, 0, r.tokens);
              qp.insert(qp.end(), c.begin(), c.end()), qq.insert(qq.end(), e.begin(), e.end());
            }
          }
          auto idx = MakeRetrievalIndex(m, l);
          TrainingData td;
          td.dim = d, td.k_pre = kp.data(), td.k_post = kq.data(), td.num_keys = kp.size() / d;
          td.q_pre = qp.data(), td.q_post = qq.data(), td.num_queries = qp.size() / d;
          if (!(*idx)->Train(td).ok()) continue;
          for (const KvTraceRecord& r : eval->records) {
            if (static_cast<int>(r.layer) != layer || r.tokens < 40) continue;
            (*idx)->Reset();
            const std::vector<float> kpre = rows(r.k_pre_rope, H, h, 0, r.tokens), kpost = rows(r.k, H, h, 0, r.tokens);
            (void)(*idx)->Add(kpre.data(), kpost.data(), r.tokens);
            for (uint32_t pos = r.tokens - 8; pos < r.tokens; ++pos) {
              std::vector<float> gq_pre, gq_post;
              for (int g = 0; g < G; ++g) {
                auto a = rows(r.q_pre_rope, Hq, h * G + g, pos, pos + 1), b = rows(r.q, Hq, h * G + g, pos, pos + 1);
                gq_pre.insert(gq_pre.end(), a.begin(), a.end()), gq_post.insert(gq_post.end(), b.begin(), b.end());
              }
              for (double f : fracs) {
                SelectionConfig cfg = story_sel;
                cfg.topk_fraction = f;
                auto sel = SelectTokens(**idx, gq_pre.data(), gq_post.data(), G, pos, cfg);
                if (!sel.ok()) continue;
                std::vector<int> ids(sel->begin(), sel->end());
                Acc& a = real[{m.substr(0, m.find(':')), f}];
                a.bits = (*idx)->BitsPerToken();
                for (int g = 0; g < G; ++g) {
                  std::vector<double> p = AttentionProbs(gq_post.data() + g * d, pos, kpost.data(), r.tokens, d, 1 / std::sqrt(double(d)));
                  const SelectionRecall rc = ComputeSelectionRecall(p, ids);
                  a.topk += rc.topk_recall, a.mass += rc.mass_recall;
                  ++a.n;
                }
              }
            }
          }
        }
      }
    }
  }

  // The squat_qk sample: 32 real 128-d keys and queries of one head. Too few
  // tokens for a separate calibration: every index is trained on the sample
  // itself (in-sample) with codebooks sized for 32 keys; no sinks or window;
  // queries at positions 8..31 attend causally; K = max(1, ceil(f · context)).
  std::map<std::tuple<std::string, double>, Acc> squat;
  auto sample = LoadSquatQkSample();
  if (sample.ok() && absl::GetFlag(FLAGS_method).empty()) {
    KvLayout l;
    l.num_layers = 1, l.num_q_heads = 1, l.num_kv_heads = 1, l.head_dim = 128;
    l.rope_style = RopeStyle::kNone;  // the source does not say; keys and queries are used as given
    const int d = 128;
    for (const std::string m : {"oracle", "a2ats:centroids=8,iters=10", "quest:page=4", "pq:m=2,nbits=2",
                                "commvq:stages=1,digit=2,iters=8"}) {
      auto idx = MakeRetrievalIndex(m, l);
      TrainingData td;
      td.dim = d, td.k_pre = sample->k.data(), td.k_post = sample->k.data(), td.num_keys = 32;
      td.q_pre = sample->q.data(), td.q_post = sample->q.data(), td.num_queries = 32;
      if (!idx.ok() || !(*idx)->Train(td).ok() || !(*idx)->Add(sample->k.data(), sample->k.data(), 32).ok()) {
        std::fprintf(stderr, "squat_qk: %s could not be built\n", m.c_str());
        continue;
      }
      for (int pos = 8; pos < 32; ++pos) {
        const float* q = sample->q.data() + size_t(pos) * d;
        std::vector<double> p = AttentionProbs(q, pos, sample->k.data(), 32, d, 1 / std::sqrt(double(d)));
        for (double f : fracs) {
          SelectionConfig cfg;
          cfg.sinks = 0, cfg.window = 0;
          cfg.topk = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(f * (pos + 1))));
          auto sel = SelectTokens(**idx, q, q, 1, pos, cfg);
          if (!sel.ok()) continue;
          std::vector<int> ids(sel->begin(), sel->end());
          const SelectionRecall rc = ComputeSelectionRecall(p, ids);
          Acc& a = squat[{m.substr(0, m.find(':')), f}];
          a.bits = (*idx)->BitsPerToken();
          a.topk += rc.topk_recall, a.mass += rc.mass_recall;
          ++a.n;
        }
      }
    }
  } else if (!sample.ok()) {
    std::fprintf(stderr, "squat_qk section skipped: %s\n", sample.status().ToString().c_str());
  }

  // Report.
  std::string md = "| tokens | head | method | summary bits/token | K | top-K recall | mass recall | attn-out rel err | search µs/query head (1 thread) | all threads µs | needles found |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::string csv = "tokens,head,method,bits,frac,topk_recall,mass_recall,out_err,search_us,search_all_us,needle_hit_rate\n";
  for (const auto& [key, a] : res) {
    const auto& [n, kind, m, f] = key;
    if (a.n == 0) continue;
    const double topk = a.topk / a.n, mass = a.mass / a.n, out = a.out / a.n, us = a.search_us / a.timed,
                 all = a.search_all_us / a.timed;
    int needle_hits = 0, needles = 0;
    if (!a.needle_by_distance.empty()) {  // which planted keys were found, by their distance from the decode queries
      std::string by = absl::StrFormat("[retrieval] %d tokens, %s, %s, K %.0f%%: needles found by distance:", n,
                                       kind == 0 ? "peaky" : "flat", m, f * 100);
      for (const auto& [dist, ft] : a.needle_by_distance) {
        absl::StrAppend(&by, " ", dist, ":", ft.first, "/", ft.second);
        needle_hits += ft.first, needles += ft.second;
      }
      std::fprintf(stderr, "%s\n", by.c_str());
    }
    const double needle_rate = needles ? double(needle_hits) / needles : 0;
    absl::StrAppend(&md, absl::StrFormat("| %d | %s | %s | %.0f | %.0f%% | %.3f | %.3f | %.4f | %.0f | %s | %d/%d |\n", n,
                                         kind == 0 ? "peaky" : "flat", m, a.bits, f * 100, topk, mass, out, us,
                                         a.search_all_us > 0 ? absl::StrFormat("%.0f", all) : "–", needle_hits,
                                         needles));
    absl::StrAppend(&csv, absl::StrFormat("%d,%s,%s,%.1f,%.4f,%.5f,%.5f,%.5f,%.1f,%.1f,%.4f\n", n,
                                          kind == 0 ? "peaky" : "flat", m, a.bits, f, topk, mass, out, us, all,
                                          needle_rate));
  }
  if (!real.empty()) {
    absl::StrAppend(&md, "\n**stories260K traces** (", ns, " stories, 5 layers x 4 KV heads, head_dim 8; queries of each story's ",
                    "last 8 positions; 1 sink + 16-token window; indexes trained on stories 980-999):\n\n",
                    "| method | summary bits/token | K | top-K recall | mass recall |\n|---|---|---|---|---|\n");
    for (const auto& [key, a] : real) {
      const auto& [m, f] = key;
      absl::StrAppend(&md, absl::StrFormat("| %s | %.0f | %.0f%% | %.3f | %.3f |\n", m, a.bits, f * 100, a.topk / a.n, a.mass / a.n));
    }
  }
  if (!squat.empty()) {
    absl::StrAppend(&md, "\n**squat_qk sample** (32 real 128-d keys/queries of one head; indexes trained in-sample with ",
                    "codebooks sized for 32 keys; no sinks/window; queries at positions 8..31; K = max(1, ⌈f·context⌉)):\n\n",
                    "| method | summary bits/token | K | top-K recall | mass recall |\n|---|---|---|---|---|\n");
    for (const auto& [key, a] : squat) {
      const auto& [m, f] = key;
      absl::StrAppend(&md, absl::StrFormat("| %s | %.0f | %.0f%% | %.3f | %.3f |\n", m, a.bits, f * 100, a.topk / a.n, a.mass / a.n));
    }
  }
  std::printf("%s", md.c_str());
  if (!WriteResults(absl::GetFlag(FLAGS_out_dir), "retrieval", md, csv)) {
    std::fprintf(stderr, "cannot write results to %s\n", absl::GetFlag(FLAGS_out_dir).c_str());
    return 1;
  }
  if (!absl::GetFlag(FLAGS_method).empty() && tokens.size() == 1 && fracs.size() == 1) {
    // The requested method over both head kinds, plus FAISS IndexPQ in this run.
    double mass = 0, us = 0;
    int cnt = 0;
    for (int kind = 0; kind < 2; ++kind) {
      const Acc& a = res[{static_cast<int>(tokens[0]), kind, methods[0], fracs[0]}];
      if (a.n) mass += a.mass / a.n, us += a.search_us / a.timed, ++cnt;
    }
    // FAISS IndexPQ over the same number of tokens, 12-bit codes, one thread.
    const Head h = MakeHead(1, 0, static_cast<int>(tokens[0]), 4, std::min<int64_t>(absl::GetFlag(FLAGS_train_tokens), tokens[0]));
    faiss::IndexPQ pq(h.d, 2, 6, faiss::METRIC_INNER_PRODUCT);
    pq.train(h.cal, h.k_post.data());
    pq.add(h.n, h.k_post.data());
    const int64_t kk = static_cast<int64_t>(std::ceil(fracs[0] * h.n));
    std::vector<float> dist(kk);
    std::vector<faiss::Index::idx_t> ids(kk);
    omp_set_num_threads(1);
    double faiss_us = 0;
    for (int i = 0; i < 16; ++i) {
      const auto s0 = Clock::now();
      pq.search(1, h.dq_post.data() + (i % 4) * h.d, kk, dist.data(), ids.data());
      faiss_us += Us(s0, Clock::now());
    }
    std::printf("mass_recall %.4f search_us %.1f faiss_pq_us %.1f\n", cnt ? mass / cnt : 0, cnt ? us / cnt : 0, faiss_us / 16);
  }
  return 0;
}
