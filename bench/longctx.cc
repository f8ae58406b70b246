// Long-context batch job through a RetrievalSession (issue: long-context).
//
//   bazel run -c opt //bench:longctx -- --out_dir bench/results [--tokens 1048576]
//
// Streams a synthetic sequence (codec/synthetic_kv.h: --kv_heads KV heads of
// 128 dims, 4 query heads each) through a session into the embedded store or,
// with --server, a kvrecall-server process on loopback (UCX); the store's host
// tier (--host_mib) is smaller than the sequence so the SSD tier holds the
// rest. Then runs --steps decode steps in attend mode and in gather mode
// (--modes), and exact CPU attention over all tokens as the reference, in the
// same run. Reports per-step latency by phase, bytes moved per step, memory per
// token, and recall against exact attention.
#include <unistd.h>


#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/results_io.h"
#include "client/retrieval_session.h"
#include "index/retrieval_index.h"
#include "codec/attention.h"
#include "codec/metrics.h"
#include "codec/synthetic_kv.h"
#include "common/parallel.h"
#include "tests/server_process.h"

ABSL_FLAG(int64_t, tokens, 1 << 20, "sequence length");
ABSL_FLAG(int, kv_heads, 4, "KV heads (4 query heads each, 128-d)");
ABSL_FLAG(int, steps, 8, "decode steps per mode");
ABSL_FLAG(double, topk, 0.01, "top-K per query head as a fraction of the offloaded tokens");
ABSL_FLAG(int, block, 256, "tokens per sequence block (one KV head each)");
ABSL_FLAG(int, segment_blocks, 0,
          "0: blocks in time order; N: code-sorted segments of N blocks (RetrievalSessionOptions::segment_blocks)");
ABSL_FLAG(std::string, codec, "f16", "codec of the offloaded blocks (a stateless post-RoPE one: f16, kivi:bits=4, ...)");
ABSL_FLAG(int, window, 512, "recent-token window");
ABSL_FLAG(int64_t, host_mib, 256, "host tier of the embedded store (MiB)");
ABSL_FLAG(int, centroids, 4096, "A²ATS codebook size");
ABSL_FLAG(int, outliers, 0, "A²ATS outlier slots: codes that each hold one key no centroid stands for (0 = none)");
ABSL_FLAG(int64_t, band, 0,
          "A²ATS position bands of this many tokens, each scored with its own table (0 = one table; with "
          "--segment_blocks, a multiple of the segment's tokens)");
ABSL_FLAG(std::string, index_extra, "", "more A²ATS spec parameters, e.g. slow=8,horizon=1048576");
ABSL_FLAG(int64_t, train_tokens, 65536, "calibration tokens");
ABSL_FLAG(bool, server, false,
          "keep the KV in a kvrecall-server child process on loopback (UCX) instead of the embedded store");
ABSL_FLAG(int, ref_threads, 0, "threads of the exact-attention reference (0: one per core)");
ABSL_FLAG(std::string, modes, "attend,gather", "fetch modes to run, in order (attend, gather)");
ABSL_FLAG(std::string, out_dir, "", "write longctx.{md,csv} here");

namespace kvrecall {
namespace {

using Clock = std::chrono::steady_clock;

int Run() {
  const int64_t n = absl::GetFlag(FLAGS_tokens);
  const int H = absl::GetFlag(FLAGS_kv_heads), steps = absl::GetFlag(FLAGS_steps);
  SyntheticConfig cfg;
  cfg.total_tokens = n;
  cfg.rope_scaling = static_cast<float>(std::max(1.0, n / 16384.0));
  const int d = cfg.head_dim, G = cfg.group_size;
  const KvLayout l = SyntheticLayout(cfg, H);
  // Generate everything up front (per KV head, [n][d]: the reference reads
  // them in place, the appends interleave a chunk at a time), the calibration
  // sample, and the decode queries.
  std::fprintf(stderr, "[longctx] generating %lld tokens x %d KV heads\n", static_cast<long long>(n), H);
  std::vector<std::vector<float>> kpre(H), kh(H), vh(H);
  const int64_t cal_n = std::min<int64_t>(absl::GetFlag(FLAGS_train_tokens), n);
  std::vector<std::vector<float>> cal_kpre(H), cal_kpost(H), cal_qpre(H), cal_qpost(H);
  std::vector<float> dq_pre(size_t(steps) * H * G * d), dq_post(dq_pre.size());
  std::vector<std::vector<int64_t>> needle_pos(H);  // per KV head: the generator's planted keys
  std::vector<std::vector<int>> needle_head(H);     // and the query head each is aimed at
  for (int h = 0; h < H; ++h) {
    SyntheticConfig c = cfg;
    c.seed = 1;
    SyntheticHead gen(c, h);
    needle_pos[h] = gen.needle_positions(), needle_head[h] = gen.needle_heads();
    std::vector<float> kp(size_t(n) * d), kq(kp.size()), vv(kp.size());
    cal_qpre[h].resize(size_t(cal_n) * G * d), cal_qpost[h].resize(cal_qpre[h].size());
    gen.Next(cal_n, kp.data(), kq.data(), vv.data(), cal_qpre[h].data(), cal_qpost[h].data());
    gen.Next(n - cal_n, kp.data() + size_t(cal_n) * d, kq.data() + size_t(cal_n) * d, vv.data() + size_t(cal_n) * d,
             nullptr, nullptr);
    std::vector<float> qp(size_t(steps) * G * d), qq(qp.size());
    gen.Next(steps, nullptr, nullptr, nullptr, qp.data(), qq.data());
    for (int s = 0; s < steps; ++s)
      for (int g = 0; g < G; ++g) {
        std::copy_n(qp.data() + (size_t(s) * G + g) * d, d, dq_pre.data() + ((size_t(s) * H + h) * G + g) * d);
        std::copy_n(qq.data() + (size_t(s) * G + g) * d, d, dq_post.data() + ((size_t(s) * H + h) * G + g) * d);
      }
    cal_kpre[h].assign(kp.begin(), kp.begin() + size_t(cal_n) * d);
    cal_kpost[h].assign(kq.begin(), kq.begin() + size_t(cal_n) * d);
    kpre[h] = std::move(kp), kh[h] = std::move(kq), vh[h] = std::move(vv);
  }
  std::vector<TrainingData> cal(H);
  for (int h = 0; h < H; ++h) {
    cal[h].dim = d, cal[h].k_pre = cal_kpre[h].data(), cal[h].k_post = cal_kpost[h].data(), cal[h].num_keys = cal_n;
    cal[h].q_pre = cal_qpre[h].data(), cal[h].q_post = cal_qpost[h].data(), cal[h].num_queries = cal_n * G;
  }
  const char* tmp = std::getenv("TMPDIR");
  const std::string ssd = absl::StrCat(tmp ? tmp : "/tmp", "/kvrecall_longctx_ssd_", getpid());
  (void)std::system(absl::StrCat("rm -rf ", ssd).c_str());
  KvClient::Options co;
  co.embedded_host_bytes = uint64_t(absl::GetFlag(FLAGS_host_mib)) << 20;
  co.embedded_ssd_path = ssd;
  co.embedded_ssd_bytes = uint64_t(n) * H * d * 2 * 2 * 2 + (1ull << 30);
  Server server;  // --server: the same store in its own process, over UCX on loopback
  if (absl::GetFlag(FLAGS_server)) {
    co.namespace_token = "longctx-token", co.namespace_salt = "longctx-salt";
    if (!server.Start({absl::StrCat("--host_bytes=", co.embedded_host_bytes), "--ssd_path=" + ssd,
                       absl::StrCat("--ssd_bytes=", co.embedded_ssd_bytes),
                       absl::StrCat("--namespace_spec=longctx:", co.namespace_token, ":", 1ull << 50, ":",
                                    co.namespace_salt)})) {
      std::fprintf(stderr, "longctx: could not start %s\n", ServerBinary().c_str());
      return 1;
    }
    co.nodes = {{server.data, 1.0}};
    co.timeout = absl::Seconds(60);
    std::fprintf(stderr, "[longctx] kvrecall-server at %s (pid %d)\n", server.data.c_str(), server.pid);
  }
  auto client = KvClient::Create(co);
  if (!client.ok()) {
    std::fprintf(stderr, "longctx: %s\n", client.status().ToString().c_str());
    return 1;
  }
  struct ModeResult {
    std::string mode;
    double step_ms = 0, select_ms = 0, fetch_ms = 0, attend_ms = 0, bytes = 0, rows = 0;
    double mass = 0, topk = 0, out_err = 0;
    int needles = 0, needle_hits = 0;  // planted keys aimed at a query head, and those the step attended over
    double append_s = 0, block_bytes_per_token = 0, summary_bits = 0;
    double pending_rows = 0, layout_bytes_per_token = 0;  // --segment_blocks
    // Per step: the session's Step wall time and exact attention for the same
    // step timed right after it (paired, so that a noisy machine's drift
    // between phases does not skew the ratio).
    std::vector<double> step_wall, ref_wall;
    std::string store_note;  // --server: the store's tier hits and promotions per step
  };
  // A counter from the server's /metrics (-1 if absent).
  auto metric = [&](const std::string& page, const std::string& name) -> double {
    const size_t at = page.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::atof(page.c_str() + at + name.size() + 2);
  };
  const char* kHostHits = "kvrecall_hits_total{tier=\"host\"}";
  const char* kSsdHits = "kvrecall_hits_total{tier=\"ssd\"}";
  const char* kPromotions = "kvrecall_promotions_total";
  const char* kAttendSeconds = "kvrecall_request_seconds_sum{op=\"attend\"}";
  const char* kAttendCount = "kvrecall_request_seconds_count{op=\"attend\"}";
  std::vector<ModeResult> results;
  std::vector<float> exact_out(size_t(steps) * H * G * d);
  double full_ms = 0;
  // The reference: exact attention over all n tokens for one step's queries,
  // per KV head, the head's G query heads in one pass over its K and V (a GQA
  // decode kernel); out gets [H][G][d].
  // KV heads are split over `threads` threads (the store side may use every
  // core too: the server's workers, the embedded client's I/O threads).
  const int ref_threads = absl::GetFlag(FLAGS_ref_threads) > 0 ? absl::GetFlag(FLAGS_ref_threads) : HardwareThreads();
  auto exact_step = [&](int step, float* out, int threads) {
    ParallelFor(H, threads, 1, [&](int64_t h0, int64_t h1, int) {
      std::vector<float> lse(G);
      for (int64_t h = h0; h < h1; ++h) {
        const size_t q0 = (size_t(step) * H + h) * G;
        AttendGroup(dq_post.data() + q0 * d, G, kh[h].data(), vh[h].data(), n, d, d, 1 / std::sqrt(float(d)),
                    out + size_t(h) * G * d, lse.data());
      }
    });
  };
  double one_thread_ms = 0;
  {
    auto t0 = Clock::now();
    for (int s = 0; s < steps; ++s) exact_step(s, exact_out.data() + size_t(s) * H * G * d, 1);
    one_thread_ms = MsSince(t0) / steps;
    t0 = Clock::now();
    for (int s = 0; s < steps; ++s) exact_step(s, exact_out.data() + size_t(s) * H * G * d, ref_threads);
    full_ms = MsSince(t0) / steps;
    std::fprintf(stderr, "[longctx] exact CPU attention over %lld tokens: %.1f ms per step (%d threads), %.1f ms (1)\n",
                 static_cast<long long>(n), full_ms, ref_threads, one_thread_ms);
  }
  std::vector<RetrievalSessionOptions::Fetch> modes;
  for (absl::string_view m : absl::StrSplit(absl::GetFlag(FLAGS_modes), ',')) {
    if (m == "attend") {
      modes.push_back(RetrievalSessionOptions::Fetch::kAttend);
    } else if (m == "gather") {
      modes.push_back(RetrievalSessionOptions::Fetch::kGather);
    } else {
      std::fprintf(stderr, "longctx: unknown mode '%s' in --modes (attend, gather)\n", std::string(m).c_str());
      return 1;
    }
  }
  for (auto fetch : modes) {
    ModeResult r;
    r.mode = fetch == RetrievalSessionOptions::Fetch::kAttend ? "attend" : "gather";
    RetrievalSessionOptions o;
    o.sequence_id = "longctx-" + r.mode;
    o.layout = l;
    o.index = absl::StrCat("a2ats:centroids=", absl::GetFlag(FLAGS_centroids), ",iters=10,b=2048,seed=1,outliers=",
                           absl::GetFlag(FLAGS_outliers), ",band=", absl::GetFlag(FLAGS_band),
                           absl::GetFlag(FLAGS_index_extra).empty() ? "" : ",", absl::GetFlag(FLAGS_index_extra));
    if (auto spec = MakeRetrievalIndex(o.index, l); spec.ok()) r.summary_bits = (*spec)->BitsPerToken();
    o.block_tokens = absl::GetFlag(FLAGS_block);
    o.segment_blocks = absl::GetFlag(FLAGS_segment_blocks);
    o.codec = absl::GetFlag(FLAGS_codec);
    o.window = absl::GetFlag(FLAGS_window);
    o.topk_fraction = absl::GetFlag(FLAGS_topk);
    o.fetch = fetch;
    auto s = RetrievalSession::Open(client->get(), o, cal);
    if (!s.ok()) {
      std::fprintf(stderr, "longctx: %s\n", s.status().ToString().c_str());
      return 1;
    }
    auto t0 = Clock::now();
    const int64_t chunk = 1 << 14;
    std::vector<float> ck(size_t(chunk) * H * d), ckp(ck.size()), cv(ck.size());  // a chunk as [t][H][d]
    for (int64_t t = 0; t < n; t += chunk) {
      const int64_t m = std::min(chunk, n - t);
      for (int64_t i = 0; i < m; ++i)
        for (int h = 0; h < H; ++h) {
          const size_t src = size_t(t + i) * d, dst = (size_t(i) * H + h) * d;
          std::copy_n(kpre[h].data() + src, d, ckp.data() + dst);
          std::copy_n(kh[h].data() + src, d, ck.data() + dst);
          std::copy_n(vh[h].data() + src, d, cv.data() + dst);
        }
      if (absl::Status st = (*s)->Append(0, ckp.data(), ck.data(), cv.data(), static_cast<int>(m)); !st.ok()) {
        std::fprintf(stderr, "longctx append: %s\n", st.ToString().c_str());
        return 1;
      }
      std::fprintf(stderr, "\r[longctx] %s: appended %lld / %lld tokens", r.mode.c_str(),
                   static_cast<long long>(t + m), static_cast<long long>(n));
    }
    r.append_s = MsSince(t0) / 1e3;
    std::fprintf(stderr, " (%.1f s)\n", r.append_s);
    const RetrievalSessionStats before = (*s)->stats();
    const std::string metrics_before = server.pid > 0 ? HttpGet(server.metrics, "/metrics") : "";
    std::vector<float> out(size_t(H) * G * d);
    t0 = Clock::now();
    for (int step = 0; step < steps; ++step) {
      const size_t q0 = size_t(step) * H * G * d;
      const auto ts = Clock::now();
      if (absl::Status st = (*s)->Step(0, dq_pre.data() + q0, dq_post.data() + q0, out.data()); !st.ok()) {
        std::fprintf(stderr, "longctx step: %s\n%s", st.ToString().c_str(),
                     server.pid > 0 ? "" : ("store metrics:\n" + (*client)->EmbeddedMetrics()).c_str());
        return 1;
      }
      r.step_wall.push_back(MsSince(ts));
      {
        std::vector<float> ref(size_t(H) * G * d);
        const auto tr = Clock::now();
        exact_step(step, ref.data(), ref_threads);
        r.ref_wall.push_back(MsSince(tr));
      }
      for (int h = 0; h < H; ++h) {
        const std::vector<int64_t>& sel = (*s)->last_selection(0)[h];
        const std::vector<int> ids(sel.begin(), sel.end());
        const size_t q0 = (size_t(step) * H + h) * G;
        const std::vector<SelectionRecall> rcs =
            GroupSelectionRecall(dq_post.data() + q0 * d, G, kh[h].data(), n, d, d, 1 / std::sqrt(float(d)), ids);
        for (int g = 0; g < G; ++g) {
          const size_t qi = q0 + g;
          const SelectionRecall& rc = rcs[g];
          r.mass += rc.mass_recall, r.topk += rc.topk_recall;
          r.out_err += RelativeError(exact_out.data() + qi * d, out.data() + (size_t(h) * G + g) * d, d);
        }
        for (size_t i = 0; i < needle_pos[h].size(); ++i) {
          ++r.needles;
          r.needle_hits += std::binary_search(sel.begin(), sel.end(), needle_pos[h][i]) ? 1 : 0;
        }
      }
      std::fprintf(stderr, "\r[longctx] %s: step %d / %d", r.mode.c_str(), step + 1, steps);
    }
    std::fprintf(stderr, "\n");
    const RetrievalSessionStats after = (*s)->stats();
    if (server.pid > 0) {
      const std::string m = HttpGet(server.metrics, "/metrics");
      auto per_step = [&](const char* name) { return (metric(m, name) - metric(metrics_before, name)) / steps; };
      const double attends = per_step(kAttendCount);
      r.store_note = absl::StrFormat(
          "; the store per step: %.0f host-tier hits, %.0f SSD-tier hits, %.1f promotions, %.0f Attend requests "
          "taking %.1f ms each from arrival to reply (mean)",
          per_step(kHostHits), per_step(kSsdHits), per_step(kPromotions), attends,
          attends > 0 ? per_step(kAttendSeconds) * 1e3 / attends : 0.0);
      std::fprintf(stderr, "[longctx] %s%s\n", r.mode.c_str(), r.store_note.c_str());
    }
    const double samples = double(steps) * H * G;
    r.mass /= samples, r.topk /= samples, r.out_err /= samples;
    r.select_ms = (after.select_us - before.select_us) / 1e3 / steps;
    r.fetch_ms = (after.fetch_us - before.fetch_us) / 1e3 / steps;
    r.attend_ms = (after.attend_us - before.attend_us) / 1e3 / steps;
    r.step_ms = r.select_ms + r.fetch_ms + r.attend_ms;
    r.bytes = double(after.bytes_moved - before.bytes_moved) / steps;
    r.rows = double(after.fetched_rows - before.fetched_rows) / steps;
    r.pending_rows = double(after.pending_rows - before.pending_rows) / steps;
    r.layout_bytes_per_token = double(after.layout_bytes) / std::max<int64_t>(1, after.offloaded_tokens) / H;
    r.block_bytes_per_token = double(after.saved_bytes) / std::max<int64_t>(1, after.offloaded_tokens);
    results.push_back(r);
  }
  const double full_bytes = double(n) * H * d * 2 * 2;  // f16 K and V read by full attention
  {  // The reference row: the median of the paired timings of both modes.
    std::vector<double> all;
    for (const auto& r : results) all.insert(all.end(), r.ref_wall.begin(), r.ref_wall.end());
    if (!all.empty()) full_ms = Median(all);
  }
  std::string md = absl::StrFormat(
      "Sequence: %lld tokens, %d KV heads x 4 query heads, head_dim %d, one layer; blocks of %d tokens of one KV head "
      "(codec %s)%s, window %d + 4 sinks local; A²ATS %d centroids%s (%.0f-bit codes) per KV head; top-K = %.1f%% of the "
      "offloaded tokens per query head, unioned over the KV head's 4 query heads; rows = (KV head, token) pairs; "
      "%s: %lld MiB host tier + SSD tier.\n\n",
      static_cast<long long>(n), H, d, absl::GetFlag(FLAGS_block), absl::GetFlag(FLAGS_codec),
      absl::GetFlag(FLAGS_segment_blocks) > 0
          ? absl::StrFormat(", stored in code-sorted segments of %d blocks (picks still waiting for their segment "
                            "are attended on the client)", absl::GetFlag(FLAGS_segment_blocks))
          : std::string(", in time order"),
      absl::GetFlag(FLAGS_window),
      absl::GetFlag(FLAGS_centroids),
      absl::StrCat(absl::GetFlag(FLAGS_outliers) > 0
                       ? absl::StrCat(" + ", absl::GetFlag(FLAGS_outliers), " outlier slots")
                       : std::string(),
                   absl::GetFlag(FLAGS_band) > 0
                       ? absl::StrCat(", one table per position band of ", absl::GetFlag(FLAGS_band), " tokens")
                       : std::string(),
                   absl::GetFlag(FLAGS_index_extra).empty() ? std::string()
                                                            : absl::StrCat(" (", absl::GetFlag(FLAGS_index_extra), ")")),
      results.empty() ? 0.0 : results[0].summary_bits,
      100 * absl::GetFlag(FLAGS_topk),
      server.pid > 0 ? absl::StrCat("a kvrecall-server process over UCX on loopback (UCX_TLS=",
                                    std::getenv("UCX_TLS") ? std::getenv("UCX_TLS") : "UCX's choice", ")")
                     : std::string("embedded store"),
      static_cast<long long>(absl::GetFlag(FLAGS_host_mib)));
  absl::StrAppend(&md, "| mode | step ms | select ms | fetch ms | attend+merge ms | rows fetched/step | bytes moved/step | "
                       "vs gather | vs full KV read | mass recall | top-K recall | output rel err | needles found |\n"
                       "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::string csv = "mode,step_ms,select_ms,fetch_ms,attend_ms,rows,bytes,mass_recall,topk_recall,out_err,needle_hit_rate\n";
  const ModeResult* gather = nullptr;
  const ModeResult* attend = &results[0];
  for (const auto& r : results) (r.mode == "gather" ? gather : attend) = &r;
  const double gather_bytes = gather ? gather->bytes : 0;
  for (const auto& r : results) {
    const std::string vs_gather =
        gather ? absl::StrFormat("1/%.0f", gather_bytes / std::max(1.0, r.bytes)) : std::string("–");
    absl::StrAppend(&md, absl::StrFormat(
                             "| %s | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f | %s | 1/%.0f | %.3f | %.3f | %.3f | %d/%d |\n",
                             r.mode, r.step_ms, r.select_ms, r.fetch_ms, r.attend_ms, r.rows, r.bytes, vs_gather,
                             full_bytes / std::max(1.0, r.bytes), r.mass, r.topk, r.out_err, r.needle_hits, r.needles));
    absl::StrAppend(&csv, absl::StrFormat("%s,%.3f,%.3f,%.3f,%.3f,%.0f,%.0f,%.5f,%.5f,%.5f,%.4f\n", r.mode, r.step_ms,
                                          r.select_ms, r.fetch_ms, r.attend_ms, r.rows, r.bytes, r.mass, r.topk,
                                          r.out_err, r.needles ? double(r.needle_hits) / r.needles : 0.0));
  }
  absl::StrAppend(&md, absl::StrFormat("| full attention (CPU, exact) | %.1f | – | – | %.1f | %.0f | %.0f | – | 1/1 | 1 | 1 | 0 | all |\n",
                                       full_ms, full_ms, double(n) * H, full_bytes));
  absl::StrAppend(&csv, absl::StrFormat("full,%.3f,0,0,%.3f,%.0f,%.0f,1,1,0,1\n", full_ms, full_ms, double(n) * H, full_bytes));
  const ModeResult& a = *attend;
  std::vector<double> ratios;
  for (size_t i = 0; i < a.step_wall.size() && i < a.ref_wall.size(); ++i) ratios.push_back(a.step_wall[i] / a.ref_wall[i]);
  absl::StrAppend(&md, absl::StrFormat(
      "\n%s-mode step: %.2fx the time of exact CPU attention over the same tokens (median over %d steps of the "
      "step's wall time, %.1f ms median, divided by exact attention for the same step timed right after it, %.1f ms "
      "median, on %d threads, one KV head per thread at a time; %.1f ms on one thread, timed before the session; the "
      "table's full-attention row is the median of all modes' paired timings). Memory per token: "
      "offloaded blocks %.0f B (all KV heads); GPU-resident summary %.0f bits per KV head (one code)%s; append "
      "of the whole sequence %.1f s (%s run)%s%s.\n",
      a.mode, Median(ratios), static_cast<int>(ratios.size()), Median(a.step_wall), Median(a.ref_wall), ref_threads,
      one_thread_ms, a.block_bytes_per_token,
      a.summary_bits,
      absl::GetFlag(FLAGS_segment_blocks) > 0
          ? absl::StrFormat(" + segment row offsets %.3f B per KV head; %.0f of a step's picked rows (of %.0f "
                            "fetched) waited on the client", a.layout_bytes_per_token, a.pending_rows, a.rows)
          : std::string(),
      a.append_s, a.mode, gather && gather != &a ? absl::StrFormat(" / %.1f s (gather run)", gather->append_s) : "",
      a.store_note));
  std::printf("%s", md.c_str());
  if (!WriteResults(absl::GetFlag(FLAGS_out_dir), "longctx", md, csv)) return 1;
  (void)std::system(absl::StrCat("rm -rf ", ssd).c_str());
  return 0;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return kvrecall::Run();
}
