// Codec quality, side by side, on real and synthetic KV (issue: codecs).
//
//   bazel run -c opt //bench:codec_quality -- --out_dir bench/results [--stories 100]
//   bazel run -c opt //bench:codec_quality -- --squat_fixture
//
// For every codec: bits per element (K, V, mean; everything counted) and,
// per dataset, relative reconstruction error of K and V, attention-output
// relative error and attention-probability L1 (per query; causal):
//   (a) stories260K KV traces (all 5 layers x 4 KV heads of --trace_stories
//       stories, each story encoded as one prefill chunk per layer),
//   (b) the squat_qk sample (keys only: no output error),
//   (c) the synthetic generator's 128-dim heads, 3 seeds x (peaky, flat),
// CommVQ rows train their codebooks per dataset on other tokens of the same
// source (stories 980-999; the synthetic head's next 8192 tokens); the
// squat_qk sample (32 keys) is too small to calibrate on and is skipped,
// and Δperplexity on the first --stories stories with the codec streaming
// in every layer. Writes codec_quality.md and codec_quality.csv.
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
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "codec/codec.h"
#include "codec/commvq.h"
#include "codec/metrics.h"
#include "codec/rope.h"
#include "codec/synthetic_kv.h"
#include "common/shared_data.h"
#include "engine/cache_factory.h"
#include "engine/eval.h"

ABSL_FLAG(bool, squat_fixture, false, "print only the squat_qk golden L1 values");
ABSL_FLAG(std::string, out_dir, "", "where to write codec_quality.{md,csv} (relative to the workspace)");
ABSL_FLAG(int, stories, 100, "stories for Δperplexity (0 = skip)");
ABSL_FLAG(int, trace_stories, 8, "stories traced for the attention metrics");
ABSL_FLAG(int, synthetic_tokens, 4096, "tokens per synthetic head");

namespace kvrecall {
namespace {

struct Metrics {
  double k_rel = 0, v_rel = 0, out_rel = 0, l1 = 0;
  double k_bits = 0, v_bits = 0;
  int n = 0;  // heads averaged
  void Add(const Metrics& m) {
    k_rel += m.k_rel, v_rel += m.v_rel, out_rel += m.out_rel, l1 += m.l1, k_bits += m.k_bits, v_bits += m.v_bits;
    ++n;
  }
  Metrics Mean() const {
    Metrics r = *this;
    if (n) r.k_rel /= n, r.v_rel /= n, r.out_rel /= n, r.l1 /= n, r.k_bits /= n, r.v_bits /= n;
    return r;
  }
};

// Encodes one layer's chunk ([1][kv_heads][n][d]) and measures it against
// exact attention in the post-RoPE frame. If `k_pre` is given, the codec
// quantizes pre-RoPE keys and the decoded keys are rotated by their position
// before comparing. q_ctx [q_heads][n_ctx][d] is the context SQuat builds
// its subspace from; q [q_heads][nq][d] post-RoPE queries at q_pos.
absl::StatusOr<Metrics> Measure(const KvCodec& codec, const KvLayout& layout, int n, const std::vector<float>& k,
                                const std::vector<float>* k_pre, const std::vector<float>& v,
                                const std::vector<float>& q_ctx, int n_ctx, const std::vector<float>& q,
                                const std::vector<int>& q_pos, bool has_v, int layer = 0) {
  KvChunkRef c;
  c.layout = layout;
  c.layout.num_layers = layer + 1;  // per-layer codebooks (CommVQ) need the layer
  c.layout.keys_pre_rope = k_pre != nullptr;
  c.layer_begin = layer;
  c.layer_count = 1;
  c.tokens = n;
  c.k = k_pre ? k_pre->data() : k.data();
  c.v = v.data();
  EncodeOptions o;
  o.queries = q_ctx.data();
  o.num_queries = n_ctx;
  auto block = codec.Encode(c, &o);
  if (!block.ok()) return block.status();
  auto view = ParseBlock(AsBytes(*block));
  if (!view.ok()) return view.status();
  const int d = layout.head_dim, H = layout.num_kv_heads, G = layout.group_size(), nq = static_cast<int>(q_pos.size());
  std::vector<float> kh(k.size()), vh(v.size());
  if (absl::Status s = codec.Decode(*view, kh.data(), vh.data()); !s.ok()) return s;
  if (k_pre) {
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < n; ++t) ApplyRope(kh.data() + (size_t(h) * n + t) * d, layout, t);
  }
  const BitsPerElement bits = codec.Bits(*view, block->size());
  Metrics per;
  for (int h = 0; h < H; ++h) {
    const size_t off = size_t(h) * n * d;
    Metrics one;
    one.k_rel = RelativeError(k.data() + off, kh.data() + off, int64_t(n) * d);
    one.v_rel = has_v ? RelativeError(v.data() + off, vh.data() + off, int64_t(n) * d) : 0;
    for (int g = 0; g < G; ++g) {
      const float* qg = q.data() + (size_t(h) * G + g) * nq * d;
      AttentionError e = CompareAttention(qg, nq, q_pos.data(), k.data() + off, kh.data() + off,
                                          has_v ? v.data() + off : nullptr, has_v ? vh.data() + off : nullptr, n, d,
                                          1 / std::sqrt(double(d)));
      one.out_rel += e.output_rel / G;
      one.l1 += e.prob_l1_mean / G;
    }
    per.Add(one);
  }
  Metrics m = per.Mean();
  m.k_bits = bits.k;
  m.v_bits = bits.v;
  return m;
}

// Does the codec quantize keys before RoPE, and build SQuat's subspace from
// pre-RoPE queries?
bool PreRope(const KvCodec& c) { return StreamingParamsOf(c).pre_rope; }
bool QueryPreRope(const KvCodec& c) { return StreamingParamsOf(c).query_pre_rope; }

struct Row {
  std::string spec;
  Metrics stories, fixture, synthetic;
  bool has_stories = false, has_fixture = false, has_synth = false;
  double ppl = 0, dppl = 0, kv_bytes = 0;
  bool has_ppl = false;
};

std::vector<std::string> Specs() {
  return {"f16",
          "kivi:bits=2", "kivi:bits=3", "kivi:bits=4",
          "qwc:kbits=3,vbits=1", "qwc:kbits=4,vbits=2", "qwc:kbits=5,vbits=3", "qwc:kbits=2,vbits=4",
          "qwc:kbits=4,vbits=2,pre_rope=1",
          "gear:bits=2", "gear:bits=3", "gear:bits=4", "gear_l:bits=2",
          "squat:bits=2", "squat:bits=3", "squat:bits=4", "squat:bits=2,rank=30,block=2,lambda=0.1",
          "squat:bits=2,qspace=pre,rank=2,block=2,lambda=0.01",
          "commvq:bits=2", "commvq:bits=1"};
}

bool IsCommVq(const std::string& spec) { return spec.rfind("commvq", 0) == 0; }

// CommVQ rows name a bit rate; each dataset trains its own calibration on
// other tokens of the same source and the row runs the resulting codec.
absl::StatusOr<std::unique_ptr<KvCodec>> CodecFor(const std::string& spec, const std::map<std::string, std::string>& resolved) {
  auto it = resolved.find(spec);
  if (IsCommVq(spec) && it == resolved.end()) return absl::FailedPreconditionError("no calibration for this dataset");
  return MakeCodec(it == resolved.end() ? spec : it->second);
}

int SquatFixtureOnly() {
  auto sample = LoadSquatQkSample();
  if (!sample.ok()) {
    std::fprintf(stderr, "%s\n", sample.status().ToString().c_str());
    return 1;
  }
  const std::vector<float>& q = sample->q;
  const std::vector<float>& k = sample->k;
  KvLayout l;
  l.num_layers = 1, l.num_q_heads = 1, l.num_kv_heads = 1, l.head_dim = 128;
  std::vector<int> pos(32);
  for (int i = 0; i < 32; ++i) pos[i] = i;
  for (const auto& [label, spec] : {std::pair<const char*, const char*>{"vanilla_l1", "kivi:bits=2,kgroup=32,meta=f32"},
                                    {"squat_l1", "squat:bits=2,kgroup=32,rank=30,block=2,lambda=0.1,meta=f32"}}) {
    auto codec = MakeCodec(spec);
    auto m = Measure(**codec, l, 32, k, nullptr, k, q, 32, q, pos, false);
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
      return 1;
    }
    std::printf("%s %.4f\n", label, m->l1 * 32);  // the fixture's L1 is the sum over its 32 rows
  }
  return 0;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  using namespace kvrecall;
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_squat_fixture)) return SquatFixtureOnly();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Row> rows;
  for (const std::string& s : Specs()) rows.push_back(Row{s});

  // (a) stories260K traces.
  auto data = FindDataDir();
  absl::StatusOr<KvTrace> cal_trace = absl::UnavailableError("no data");
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  std::vector<std::string> stories;
  if (data.ok()) {
    model = std::move(*Model::Load(Env::Default(), *data + "/stories260K.bin"));
    tok = std::move(*Tokenizer::Load(Env::Default(), *data + "/tok512.bin", model->config().vocab_size));
    stories = *LoadStories(Env::Default(), *data + "/tinystories_valid_first1000.txt");
    std::vector<int> ids;
    for (int i = 0; i < absl::GetFlag(FLAGS_trace_stories); ++i) ids.push_back(i);
    auto trace = TraceStories(*model, *tok, stories, ids, {}, 512);
    std::vector<int> cal_ids;
    for (int i = 980; i < 1000; ++i) cal_ids.push_back(i);
    cal_trace = TraceStories(*model, *tok, stories, cal_ids, {}, 512);
    std::map<std::string, std::string> resolved;
    for (const Row& row : rows) {
      if (!IsCommVq(row.spec)) continue;
      auto r = TrainCommVqSpec(row.spec, *cal_trace);
      if (r.ok()) resolved[row.spec] = *r;
      else std::fprintf(stderr, "%s calibration: %s\n", row.spec.c_str(), r.status().ToString().c_str());
    }
    const KvLayout l = trace->layout;
    const int d = l.head_dim, H = l.num_kv_heads, Hq = l.num_q_heads;
    for (Row& row : rows) {
      auto codec = CodecFor(row.spec, resolved);
      if (!codec.ok()) continue;
      Metrics acc;
      bool ok = true;
      for (const KvTraceRecord& r : trace->records) {
        const int n = r.tokens;
        // Trace rows are [t][heads][d]; codecs take [heads][t][d].
        std::vector<float> k(size_t(H) * n * d), v(k.size()), q(size_t(Hq) * n * d), qp(q.size());
        for (int t = 0; t < n; ++t) {
          for (int h = 0; h < H; ++h)
            for (int c = 0; c < d; ++c) {
              k[(size_t(h) * n + t) * d + c] = r.k[(size_t(t) * H + h) * d + c];
              v[(size_t(h) * n + t) * d + c] = r.v[(size_t(t) * H + h) * d + c];
            }
          for (int h = 0; h < Hq; ++h)
            for (int c = 0; c < d; ++c) {
              q[(size_t(h) * n + t) * d + c] = r.q[(size_t(t) * Hq + h) * d + c];
              qp[(size_t(h) * n + t) * d + c] = r.q_pre_rope[(size_t(t) * Hq + h) * d + c];
            }
        }
        std::vector<int> pos(n);
        for (int t = 0; t < n; ++t) pos[t] = t;
        std::vector<float> kpre(k.size());
        for (int t = 0; t < n; ++t)
          for (int h = 0; h < H; ++h)
            for (int c = 0; c < d; ++c) kpre[(size_t(h) * n + t) * d + c] = r.k_pre_rope[(size_t(t) * H + h) * d + c];
        absl::StatusOr<Metrics> m = Measure(**codec, l, n, k, PreRope(**codec) ? &kpre : nullptr, v,
                                            QueryPreRope(**codec) ? qp : q, n, q, pos, true, static_cast<int>(r.layer));
        if (!m.ok()) {
          std::fprintf(stderr, "%s on stories: %s\n", row.spec.c_str(), m.status().ToString().c_str());
          ok = false;
          break;
        }
        acc.Add(*m);
      }
      if (ok) row.stories = acc.Mean(), row.has_stories = true;
      std::fprintf(stderr, "\r(a) stories traces: %s          ", row.spec.c_str());
    }
    std::fprintf(stderr, "\n");
  } else {
    std::fprintf(stderr, "(a) skipped: %s\n", data.status().ToString().c_str());
  }

  // (b) squat_qk fixture (keys only).
  auto fixture = LoadSquatQkSample();
  if (fixture.ok()) {
    const std::vector<float>& fq = fixture->q;
    const std::vector<float>& fk = fixture->k;
    KvLayout l;
    l.num_layers = 1, l.num_q_heads = 1, l.num_kv_heads = 1, l.head_dim = 128;
    std::vector<int> pos(32);
    for (int i = 0; i < 32; ++i) pos[i] = i;
    for (Row& row : rows) {
      if (IsCommVq(row.spec)) continue;  // 32 keys cannot calibrate a codebook (and in-sample would flatter it)
      auto m = Measure(**MakeCodec(row.spec), l, 32, fk, nullptr, fk, fq, 32, fq, pos, false);
      if (m.ok()) row.fixture = *m, row.has_fixture = true;
    }
  }

  // (c) synthetic 128-dim heads.
  const int n = absl::GetFlag(FLAGS_synthetic_tokens);
  for (uint64_t seed : {1, 2, 3}) {
    for (int head : {0, 1}) {
      SyntheticConfig cfg;
      cfg.seed = seed;
      cfg.total_tokens = n;
      SyntheticHead gen(cfg, head);
      const int d = cfg.head_dim, G = cfg.group_size;
      std::vector<float> kpost(size_t(n) * d), kpre(kpost.size()), v(kpost.size()), q(size_t(n) * G * d), qpre(q.size());
      gen.Next(n, kpre.data(), kpost.data(), v.data(), qpre.data(), q.data());
      KvLayout l;
      l.num_layers = 1, l.num_q_heads = G, l.num_kv_heads = 1, l.head_dim = d;
      l.rope_style = cfg.rope_style, l.rope_theta = cfg.rope_theta;
      // Queries: the prompt's first half give SQuat its subspace; measure on 64
      // query positions in the back half.
      std::vector<float> qctx(size_t(G) * (n / 2) * d), qctx_pre(qctx.size()), qm(size_t(G) * 64 * d);
      std::vector<int> pos;
      for (int i = 0; i < 64; ++i) pos.push_back(n / 2 + i * (n / 2) / 64);
      for (int g = 0; g < G; ++g) {
        for (int t = 0; t < n / 2; ++t) {
          std::copy_n(q.data() + (size_t(t) * G + g) * d, d, qctx.data() + (size_t(g) * (n / 2) + t) * d);
          std::copy_n(qpre.data() + (size_t(t) * G + g) * d, d, qctx_pre.data() + (size_t(g) * (n / 2) + t) * d);
        }
        for (int i = 0; i < 64; ++i)
          std::copy_n(q.data() + (size_t(pos[i]) * G + g) * d, d, qm.data() + (size_t(g) * 64 + i) * d);
      }
      // CommVQ calibration: the next 8192 tokens of the same head.
      std::map<std::string, std::string> resolved;
      {
        const int nc = 8192;
        std::vector<float> ck(size_t(nc) * d), cv(ck.size());
        gen.Next(nc, ck.data(), nullptr, cv.data(), nullptr, nullptr);
        CommVqTrainingSet set;
        set.k_pre = {ck};
        set.v = {cv};
        KvLayout cl = l;
        cl.keys_pre_rope = true;
        for (const Row& row : rows) {
          if (!IsCommVq(row.spec)) continue;
          const double bits = row.spec == "commvq:bits=1" ? 1 : 2;
          CommVqConfig cfg = CommVqConfigForBits(bits, d);
          cfg.train.iters = 8;
          auto cal = TrainCommVqCalibration(cl, 1, set, cfg);
          if (!cal.ok()) {
            std::fprintf(stderr, "%s calibration: %s\n", row.spec.c_str(), cal.status().ToString().c_str());
            continue;
          }
          RegisterCommVqCalibration(*cal);
          resolved[row.spec] = CommVqCodecSpec(**cal);
        }
      }
      for (Row& row : rows) {
        auto codec = CodecFor(row.spec, resolved);
        if (!codec.ok()) continue;
        auto m = Measure(**codec, l, n, kpost, PreRope(**codec) ? &kpre : nullptr, v,
                         QueryPreRope(**codec) ? qctx_pre : qctx, n / 2, qm, pos, true);
        if (!m.ok()) {
          std::fprintf(stderr, "%s on synthetic: %s\n", row.spec.c_str(), m.status().ToString().c_str());
          continue;
        }
        row.synthetic.Add(*m);
        row.has_synth = true;
      }
      std::fprintf(stderr, "\r(c) synthetic seed %llu head %d done   ", static_cast<unsigned long long>(seed), head);
    }
  }
  std::fprintf(stderr, "\n");
  for (Row& row : rows) row.synthetic = row.synthetic.Mean();

  // (d) Δperplexity with the codec streaming in every layer.
  double exact_ppl = 0;
  const int np = absl::GetFlag(FLAGS_stories);
  if (model && np > 0) {
    std::vector<std::string> sub(stories.begin(), stories.begin() + std::min<size_t>(np, stories.size()));
    KvCacheContext ctx;
    ctx.model_id = model->id();
    ctx.num_layers = model->config().n_layers;
    ctx.k_norms = model->wk_norms();
    ctx.v_norms = model->wv_norms();
    if (cal_trace.ok()) ctx.calibration = &*cal_trace;  // CommVQ trains on stories 980-999
    auto exact = EvaluatePerplexity(*model, *tok, sub, MakeKvCache("exact", ctx)->get());
    exact_ppl = exact->perplexity();
    std::vector<std::string> extra = {"qwc:budget=2", "qwc:budget=3", "qwc:budget=4"};
    for (const std::string& e : extra) rows.push_back(Row{e});
    for (Row& row : rows) {
      auto cache = MakeKvCache(row.spec, ctx);
      if (!cache.ok()) continue;
      auto r = EvaluatePerplexity(*model, *tok, sub, cache->get());
      if (!r.ok()) {
        std::fprintf(stderr, "%s perplexity: %s\n", row.spec.c_str(), r.status().ToString().c_str());
        continue;
      }
      row.ppl = r->perplexity(), row.dppl = r->perplexity() - exact_ppl, row.kv_bytes = r->kv_bytes_per_token;
      row.has_ppl = true;
      std::fprintf(stderr, "\r(d) perplexity: %s          ", row.spec.c_str());
    }
    std::fprintf(stderr, "\n");
  }

  // Report.
  auto f = [](bool has, double x, const char* fmt) { return has ? absl::StrFormat(fmt, x) : std::string("–"); };
  std::string md;
  absl::StrAppend(&md, "| codec | bits K / V / mean (synthetic 128-d) | bits mean (stories, d=8) | stories: K rel | V rel | attn-out rel | attn L1/query "
                       "| squat_qk: K rel | attn L1/query | synthetic: K rel | V rel | attn-out rel | attn L1/query "
                       "| Δppl (", np, " stories) | KV B/token (streaming) |\n");
  absl::StrAppend(&md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::string csv = "spec,k_bits,v_bits,stories_bits,stories_k_rel,stories_v_rel,stories_out_rel,stories_l1,fixture_k_rel,fixture_l1,"
                    "synth_k_rel,synth_v_rel,synth_out_rel,synth_l1,dppl,kv_bytes\n";
  for (const Row& r : rows) {
    const Metrics& s = r.synthetic;
    absl::StrAppend(&md, "| `", r.spec, "` | ", r.has_synth ? absl::StrFormat("%.2f / %.2f / %.2f", s.k_bits, s.v_bits, (s.k_bits + s.v_bits) / 2) : "–",
                    " | ", f(r.has_stories, (r.stories.k_bits + r.stories.v_bits) / 2, "%.2f"),
                    " | ", f(r.has_stories, r.stories.k_rel, "%.4f"), " | ", f(r.has_stories, r.stories.v_rel, "%.4f"),
                    " | ", f(r.has_stories, r.stories.out_rel, "%.4f"), " | ", f(r.has_stories, r.stories.l1, "%.4f"),
                    " | ", f(r.has_fixture, r.fixture.k_rel, "%.4f"), " | ", f(r.has_fixture, r.fixture.l1, "%.4f"),
                    " | ", f(r.has_synth, s.k_rel, "%.4f"), " | ", f(r.has_synth, s.v_rel, "%.4f"),
                    " | ", f(r.has_synth, s.out_rel, "%.4f"), " | ", f(r.has_synth, s.l1, "%.4f"),
                    " | ", f(r.has_ppl, r.dppl, "%+.4f"), " | ", f(r.has_ppl, r.kv_bytes, "%.1f"), " |\n");
    absl::StrAppend(&csv, "\"", r.spec, "\",", absl::StrFormat("%.4f,%.4f,%.4f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.2f",
                                                       s.k_bits, s.v_bits,
                                                       r.has_stories ? (r.stories.k_bits + r.stories.v_bits) / 2 : NAN,
                                                       r.stories.k_rel, r.stories.v_rel, r.stories.out_rel,
                                                       r.stories.l1, r.fixture.k_rel, r.fixture.l1, s.k_rel, s.v_rel,
                                                       s.out_rel, s.l1, r.has_ppl ? r.dppl : NAN, r.kv_bytes),
                    "\n");
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  absl::StrAppend(&md, "\nExact perplexity on the same stories: ", absl::StrFormat("%.4f", exact_ppl),
                  ". Run time ", absl::StrFormat("%.0f", secs), " s.\n");
  std::printf("%s", md.c_str());
  if (!WriteResults(absl::GetFlag(FLAGS_out_dir), "codec_quality", md, csv)) {
    std::fprintf(stderr, "cannot write results to %s\n", absl::GetFlag(FLAGS_out_dir).c_str());
    return 1;
  }
  return 0;
}
