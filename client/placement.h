// Placement of BlockKeys on store nodes by weighted rendezvous hashing
// (highest random weight): each (key, node) pair gets a pseudo-random score
// -weight / ln(u), u uniform in (0, 1) from a hash of the key and the node's
// id; the highest score owns the key, the next ones hold replicas. A node
// joining or leaving moves only the keys it gains or had (expected 1/N of
// them), and no other key changes owner. Immutable; thread-safe.
#ifndef KVRECALL_CLIENT_PLACEMENT_H_
#define KVRECALL_CLIENT_PLACEMENT_H_

#include <string>
#include <vector>

#include "codec/block_key.h"

namespace kvrecall {

struct PlacementNode {
  std::string id;  // stable identity (the node's address)
  double weight = 1.0;
};

class Placement {
 public:
  explicit Placement(std::vector<PlacementNode> nodes);
  size_t size() const { return nodes_.size(); }
  const PlacementNode& node(int i) const { return nodes_[i]; }
  // Up to n node indices in preference order (first = owner).
  std::vector<int> Rank(const BlockKey& key, int n) const;
  int Owner(const BlockKey& key) const;

 private:
  std::vector<PlacementNode> nodes_;
  std::vector<uint64_t> seeds_;  // hash of each node's id
};

}  // namespace kvrecall

#endif  // KVRECALL_CLIENT_PLACEMENT_H_
