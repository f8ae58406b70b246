#include "engine/retrieval_cache.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/attention.h"
#include "common/status.h"
#include "engine/calibration.h"

namespace kvrecall {
namespace {

class RetrievalKvCache final : public KvCache {
 public:
  RetrievalKvCache(std::string spec, SelectionConfig sel, const KvTrace* cal, std::string name)
      : spec_(std::move(spec)), sel_(sel), cal_(cal), name_(std::move(name)) {}

  std::string name() const override { return name_; }

  absl::Status Begin(const KvLayout& layout) override {
    RETURN_IF_ERROR(layout.Validate());
    if (indexes_.empty() || !(layout == layout_)) {
      layout_ = layout;
      RETURN_IF_ERROR(TrainAll());
    }
    for (auto& idx : indexes_) idx->Reset();
    k_.assign(layout.num_layers, {});
    v_.assign(layout.num_layers, {});
    return absl::OkStatus();
  }

  absl::Status Append(int layer, const KvTokenView& t) override {
    if (layer < 0 || layer >= layout_.num_layers) return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
    const int H = layout_.num_kv_heads, d = layout_.head_dim;
    const size_t row = size_t(H) * d;
    if (static_cast<size_t>(t.position) != k_[layer].size() / row) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": position ", t.position, " out of order"));
    }
    k_[layer].insert(k_[layer].end(), t.k, t.k + row);
    v_[layer].insert(v_[layer].end(), t.v, t.v + row);
    for (int h = 0; h < H; ++h) {
      RETURN_IF_ERROR(indexes_[size_t(layer) * H + h]->Add(t.k_pre_rope + h * d, t.k + h * d, 1));
    }
    return absl::OkStatus();
  }

  absl::Status Attend(int layer, int pos, const float* q, const float* q_pre, float* out) override {
    if (layer < 0 || layer >= layout_.num_layers) return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
    const int H = layout_.num_kv_heads, G = layout_.group_size(), d = layout_.head_dim;
    const size_t row = size_t(H) * d;
    if (static_cast<size_t>(pos + 1) != k_[layer].size() / row) {
      return absl::InvalidArgumentError(absl::StrCat("attend at position ", pos, " out of step"));
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    for (int h = 0; h < H; ++h) {
      ASSIGN_OR_RETURN(std::vector<int64_t> sel,
                       SelectTokens(*indexes_[size_t(layer) * H + h], q_pre + size_t(h) * G * d,
                                    q + size_t(h) * G * d, G, pos, sel_));
      ks_.resize(sel.size() * d);
      vs_.resize(sel.size() * d);
      for (size_t i = 0; i < sel.size(); ++i) {
        std::copy_n(k_[layer].data() + sel[i] * row + h * d, d, ks_.data() + i * d);
        std::copy_n(v_[layer].data() + sel[i] * row + h * d, d, vs_.data() + i * d);
      }
      scratch_.resize(std::max<size_t>(sel.size(), 1));
      for (int g = 0; g < G; ++g) {
        const int qh = h * G + g;
        AttendRows(q + size_t(qh) * d, ks_.data(), vs_.data(), static_cast<int64_t>(sel.size()), d, d, scale,
                   out + size_t(qh) * d, scratch_.data());
      }
    }
    return absl::OkStatus();
  }

  double BytesPerToken() const override {
    // Full KV (f32, off the GPU in the design) plus the per-token summary.
    double summary = 0;
    for (const auto& idx : indexes_) summary += idx->BitsPerToken() / 8;
    return 2.0 * layout_.num_layers * layout_.num_kv_heads * layout_.head_dim * 4 + summary;
  }

 private:
  absl::Status TrainAll() {
    if (cal_ == nullptr) return absl::FailedPreconditionError("retrieval cache needs a calibration trace");
    const CalibrationSet cal(*cal_, layout_);
    indexes_.clear();
    for (size_t i = 0; i < cal.samples().size(); ++i) {
      ASSIGN_OR_RETURN(std::unique_ptr<RetrievalIndex> idx, MakeRetrievalIndex(spec_, layout_));
      RETURN_IF_ERROR(Annotate(idx->Train(cal.samples()[i]),
                               absl::StrCat("training layer ", i / layout_.num_kv_heads, " head ", i % layout_.num_kv_heads)));
      indexes_.push_back(std::move(idx));
    }
    return absl::OkStatus();
  }

  std::string spec_;
  SelectionConfig sel_;
  const KvTrace* cal_;
  std::string name_;
  KvLayout layout_;
  std::vector<std::unique_ptr<RetrievalIndex>> indexes_;  // [layer][kv_head]
  std::vector<std::vector<float>> k_, v_;                  // per layer [pos][kv_heads][d], post-RoPE
  std::vector<float> ks_, vs_, scratch_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvCache>> NewRetrievalKvCache(std::string index_spec, SelectionConfig selection,
                                                             const KvTrace* calibration, std::string name) {
  return std::unique_ptr<KvCache>(
      new RetrievalKvCache(std::move(index_spec), selection, calibration, std::move(name)));
}

}  // namespace kvrecall
