// Prints the synthetic generator's statistics next to those of the real
// squat_qk fixture, computed by the same code (codec/synthetic_kv.h):
//   bazel run -c opt //bench:synthetic_stats -- [--tokens 4096] [--seeds 3]
// Output is a markdown table (bench/results/synthetic_stats.md).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "codec/synthetic_kv.h"
#include "common/shared_data.h"

ABSL_FLAG(int, tokens, 4096, "tokens per synthetic head");
ABSL_FLAG(int, seeds, 3, "seeds (1..N)");

using namespace kvrecall;

namespace {

void Row(const char* source, const char* head, const SyntheticStats& pre, const SyntheticStats& post) {
  std::printf("| %s | %s | %.2f | %.3f | %.3f | %.3f |\n", source, head, pre.top_channel_ratio,
              pre.query_top20_energy, post.sink_mass, post.top3pct_mass);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_tokens);
  std::printf("| source | head | top-channel ratio (max/median mean abs k) | query energy in top-20 directions | sink attention mass | attention mass in top 3%% |\n");
  std::printf("|---|---|---|---|---|---|\n");
  auto sample = LoadSquatQkSample();
  if (sample.ok()) {
    std::vector<int> pos(32);
    for (int i = 0; i < 32; ++i) pos[i] = i;
    // The fixture holds one head's keys and queries as the model used them;
    // its sink is token 0 (tokens 0 and 1 are identical padding/BOS).
    const SyntheticStats s = ComputeKvStats(sample->k.data(), 32, sample->q.data(), 32, pos.data(), 128, 1);
    Row("squat_qk (real, 32 tokens)", "one head", s, s);
  } else {
    std::printf("| squat_qk fixture | absent: %s | | | | |\n", std::string(sample.status().message()).c_str());
  }
  for (int seed = 1; seed <= absl::GetFlag(FLAGS_seeds); ++seed) {
    for (int head = 0; head < 2; ++head) {
      SyntheticConfig c;
      c.seed = seed;
      c.total_tokens = n;
      SyntheticHead h(c, head);
      const int d = c.head_dim, g = c.group_size;
      std::vector<float> k_pre(size_t(n) * d), k(size_t(n) * d), q_pre(size_t(n) * g * d), q(size_t(n) * g * d);
      h.Next(n, k_pre.data(), k.data(), nullptr, q_pre.data(), q.data());
      // Query head 0 of the group at 256 positions spread over the sequence.
      std::vector<float> qs, qs_pre;
      std::vector<int> pos;
      for (int t = 0; t < n; t += std::max(1, n / 256)) {
        qs.insert(qs.end(), q.begin() + size_t(t) * g * d, q.begin() + size_t(t) * g * d + d);
        qs_pre.insert(qs_pre.end(), q_pre.begin() + size_t(t) * g * d, q_pre.begin() + size_t(t) * g * d + d);
        pos.push_back(t);
      }
      const int nq = static_cast<int>(pos.size());
      const SyntheticStats pre = ComputeKvStats(k_pre.data(), n, qs_pre.data(), nq, pos.data(), d, c.sink_tokens);
      const SyntheticStats post = ComputeKvStats(k.data(), n, qs.data(), nq, pos.data(), d, c.sink_tokens);
      const std::string src = "synthetic seed " + std::to_string(seed) + ", " + std::to_string(n) + " tokens";
      Row(src.c_str(), h.peaky() ? "peaky (kv head 0)" : "flat (kv head 1)", pre, post);
    }
  }
  std::printf("\nChannel ratio and query energy use pre-RoPE keys and queries; sink and top-3%% mass use\n"
              "post-RoPE attention (causal), averaged over query rows in the back 3/4 of the sequence.\n");
  return 0;
}
