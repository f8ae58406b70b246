// TensorView<T>: a non-owning strided view of up to 4 dimensions.
//
//   std::vector<float> k(L * H * n * d);
//   TensorView<float> kv(k.data(), {L, H, n, d});   // contiguous, row-major
//   float x = kv(l, h, t, c);
//   TensorView<float> head = kv.Slice(0, l, l + 1); // still rank 4
//
// Bounds are checked by Index() in debug builds only; callers validate shapes
// once at API boundaries. Copying a view copies the pointer, not the data.
#ifndef KVRECALL_CODEC_TENSOR_VIEW_H_
#define KVRECALL_CODEC_TENSOR_VIEW_H_

#include <array>
#include <cassert>
#include <cstdint>
#include <initializer_list>

namespace kvrecall {

template <typename T>
class TensorView {
 public:
  static constexpr int kMaxRank = 4;

  TensorView() = default;
  // A contiguous row-major view of `shape`.
  TensorView(T* data, std::initializer_list<int64_t> shape) : data_(data) {
    assert(shape.size() >= 1 && shape.size() <= kMaxRank);
    rank_ = static_cast<int>(shape.size());
    int i = 0;
    for (int64_t s : shape) shape_[i++] = s;
    int64_t stride = 1;
    for (int d = rank_ - 1; d >= 0; --d) {
      strides_[d] = stride;
      stride *= shape_[d];
    }
  }
  TensorView(T* data, int rank, const std::array<int64_t, kMaxRank>& shape,
             const std::array<int64_t, kMaxRank>& strides)
      : data_(data), rank_(rank), shape_(shape), strides_(strides) {}

  // Views of non-const T convert to views of const T.
  template <typename U = T, typename = std::enable_if_t<std::is_const<U>::value>>
  TensorView(const TensorView<std::remove_const_t<U>>& o)  // NOLINT(runtime/explicit)
      : data_(o.data()), rank_(o.rank()), shape_(o.shape()), strides_(o.strides()) {}

  T* data() const { return data_; }
  int rank() const { return rank_; }
  int64_t dim(int d) const { return shape_[d]; }
  int64_t stride(int d) const { return strides_[d]; }
  const std::array<int64_t, kMaxRank>& shape() const { return shape_; }
  const std::array<int64_t, kMaxRank>& strides() const { return strides_; }
  int64_t size() const {
    int64_t n = 1;
    for (int d = 0; d < rank_; ++d) n *= shape_[d];
    return n;
  }
  bool is_contiguous() const {
    int64_t stride = 1;
    for (int d = rank_ - 1; d >= 0; --d) {
      if (shape_[d] != 1 && strides_[d] != stride) return false;
      stride *= shape_[d];
    }
    return true;
  }

  template <typename... I>
  int64_t Index(I... idx) const {
    static_assert(sizeof...(I) <= kMaxRank, "too many indices");
    assert(static_cast<int>(sizeof...(I)) == rank_);
    const int64_t is[] = {static_cast<int64_t>(idx)...};
    int64_t off = 0;
    for (int d = 0; d < static_cast<int>(sizeof...(I)); ++d) {
      assert(is[d] >= 0 && is[d] < shape_[d]);
      off += is[d] * strides_[d];
    }
    return off;
  }
  template <typename... I>
  T& operator()(I... idx) const {
    return data_[Index(idx...)];
  }

  // The sub-range [begin, end) along `axis`; rank unchanged.
  TensorView Slice(int axis, int64_t begin, int64_t end) const {
    assert(axis >= 0 && axis < rank_ && 0 <= begin && begin <= end && end <= shape_[axis]);
    TensorView v = *this;
    v.data_ = data_ + begin * strides_[axis];
    v.shape_[axis] = end - begin;
    return v;
  }

  // Swaps two axes (no data moves).
  TensorView Transpose(int a, int b) const {
    TensorView v = *this;
    std::swap(v.shape_[a], v.shape_[b]);
    std::swap(v.strides_[a], v.strides_[b]);
    return v;
  }

 private:
  T* data_ = nullptr;
  int rank_ = 0;
  std::array<int64_t, kMaxRank> shape_{};
  std::array<int64_t, kMaxRank> strides_{};
};

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_TENSOR_VIEW_H_
