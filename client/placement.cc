#include "client/placement.h"

#include <algorithm>
#include <cmath>

#include "common/hash.h"

namespace kvrecall {
namespace {

double Score(const BlockKey& key, uint64_t seed, double weight) {
  const uint64_t in[3] = {key.lo, key.hi, seed};
  const uint64_t h = Checksum64(in, sizeof(in));
  const double u = (double(h >> 11) + 0.5) / double(uint64_t{1} << 53);  // (0, 1)
  return -weight / std::log(u);
}

}  // namespace

Placement::Placement(std::vector<PlacementNode> nodes) : nodes_(std::move(nodes)) {
  for (const auto& n : nodes_) seeds_.push_back(Checksum64(n.id.data(), n.id.size()));
}

std::vector<int> Placement::Rank(const BlockKey& key, int n) const {
  std::vector<std::pair<double, int>> s;
  s.reserve(nodes_.size());
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].weight > 0) s.push_back({Score(key, seeds_[i], nodes_[i].weight), static_cast<int>(i)});
  }
  const size_t k = std::min<size_t>(s.size(), n < 0 ? 0 : size_t(n));
  std::partial_sort(s.begin(), s.begin() + k, s.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<int> out;
  for (size_t i = 0; i < k; ++i) out.push_back(s[i].second);
  return out;
}

int Placement::Owner(const BlockKey& key) const {
  const std::vector<int> r = Rank(key, 1);
  return r.empty() ? -1 : r[0];
}

}  // namespace kvrecall
