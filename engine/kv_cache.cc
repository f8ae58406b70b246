#include "engine/kv_cache.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/attention.h"

namespace kvrecall {
namespace {

class ExactKvCache final : public KvCache {
 public:
  std::string name() const override { return "exact"; }

  absl::Status Begin(const KvLayout& layout) override {
    if (absl::Status s = layout.Validate(); !s.ok()) return s;
    layout_ = layout;
    row_ = static_cast<size_t>(layout.num_kv_heads) * layout.head_dim;
    k_.assign(layout.num_layers, {});
    v_.assign(layout.num_layers, {});
    return absl::OkStatus();
  }

  absl::Status Append(int layer, const KvTokenView& t) override {
    if (layer < 0 || layer >= layout_.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
    }
    if (static_cast<size_t>(t.position) != k_[layer].size() / row_) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": position ", t.position,
                                                     " out of order (have ", k_[layer].size() / row_, ")"));
    }
    k_[layer].insert(k_[layer].end(), t.k, t.k + row_);
    v_[layer].insert(v_[layer].end(), t.v, t.v + row_);
    return absl::OkStatus();
  }

  absl::Status Attend(int layer, int pos, const float* q, const float*, float* out) override {
    if (layer < 0 || layer >= layout_.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
    }
    const int64_t n = pos + 1;
    if (n < 1 || static_cast<size_t>(n) * row_ > k_[layer].size()) {
      return absl::InvalidArgumentError(absl::StrCat("attend at position ", pos, " but layer ", layer,
                                                     " holds ", k_[layer].size() / row_, " tokens"));
    }
    const int d = layout_.head_dim, g = layout_.group_size();
    scratch_.resize(n);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    for (int h = 0; h < layout_.num_q_heads; ++h) {
      const int kvh = h / g;
      AttendRows(q + size_t(h) * d, k_[layer].data() + size_t(kvh) * d,
                 v_[layer].data() + size_t(kvh) * d, n, d, static_cast<int64_t>(row_), scale,
                 out + size_t(h) * d, scratch_.data());
    }
    return absl::OkStatus();
  }

  double BytesPerToken() const override {
    return 2.0 * layout_.num_layers * row_ * sizeof(float);
  }

 private:
  KvLayout layout_;
  size_t row_ = 0;
  std::vector<std::vector<float>> k_, v_;  // per layer [pos][kv_heads][head_dim]
  std::vector<float> scratch_;
};

}  // namespace

std::unique_ptr<KvCache> NewExactKvCache() { return std::make_unique<ExactKvCache>(); }

}  // namespace kvrecall
