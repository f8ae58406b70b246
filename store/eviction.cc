#include "store/eviction.h"

#include <list>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace kvrecall {
namespace {

class LruPolicy final : public EvictionPolicy {
 public:
  std::string name() const override { return "lru"; }
  void Insert(uint64_t id, uint64_t, uint64_t) override {
    order_.push_front(id);
    where_[id] = order_.begin();
  }
  void Touch(uint64_t id) override {
    auto it = where_.find(id);
    if (it == where_.end()) return;
    order_.splice(order_.begin(), order_, it->second);
  }
  void Remove(uint64_t id) override {
    auto it = where_.find(id);
    if (it == where_.end()) return;
    order_.erase(it->second);
    where_.erase(it);
  }
  std::optional<uint64_t> Victim(const std::function<bool(uint64_t)>& evictable) override {
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      if (evictable(*it)) {
        const uint64_t id = *it;
        Remove(id);
        return id;
      }
    }
    return std::nullopt;
  }
  size_t size() const override { return where_.size(); }

 private:
  std::list<uint64_t> order_;  // front = most recent
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> where_;
};

class S3FifoPolicy final : public EvictionPolicy {
 public:
  explicit S3FifoPolicy(uint64_t capacity) : small_cap_(capacity / 10) {}
  std::string name() const override { return "s3fifo"; }

  void Insert(uint64_t id, uint64_t key_hash, uint64_t bytes) override {
    Node n;
    n.key_hash = key_hash;
    n.bytes = bytes;
    if (ghost_set_.erase(key_hash)) {
      n.main = true;
      main_.push_back(id);
      n.it = std::prev(main_.end());
      main_bytes_ += bytes;
    } else {
      small_.push_back(id);
      n.it = std::prev(small_.end());
      small_bytes_ += bytes;
    }
    nodes_[id] = n;
  }
  void Touch(uint64_t id) override {
    auto it = nodes_.find(id);
    if (it != nodes_.end() && it->second.freq < 3) ++it->second.freq;
  }
  void Remove(uint64_t id) override {
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return;
    Unlink(it->second, id);
    nodes_.erase(it);
  }
  std::optional<uint64_t> Victim(const std::function<bool(uint64_t)>& evictable) override {
    // Each entry is looked at a bounded number of times: promotion and
    // frequency decrements are finite, unevictable entries rotate once.
    size_t budget = 4 * nodes_.size() + 8;
    while (budget-- > 0 && !nodes_.empty()) {
      const bool from_small = !small_.empty() && (small_bytes_ > small_cap_ || main_.empty());
      std::list<uint64_t>& q = from_small ? small_ : main_;
      const uint64_t id = q.front();
      Node& n = nodes_[id];
      if (!evictable(id)) {  // pinned or busy: rotate
        q.splice(q.end(), q, q.begin());
        continue;
      }
      if (from_small) {
        if (n.freq > 0) {  // accessed while in S: promote to main
          small_.pop_front();
          small_bytes_ -= n.bytes;
          n.freq = 0;
          n.main = true;
          main_.push_back(id);
          n.it = std::prev(main_.end());
          main_bytes_ += n.bytes;
          continue;
        }
        Ghost(n.key_hash);
      } else if (n.freq > 0) {  // lazy promotion: reinsert with one less
        --n.freq;
        main_.splice(main_.end(), main_, main_.begin());
        continue;
      }
      Remove(id);
      return id;
    }
    return std::nullopt;
  }
  size_t size() const override { return nodes_.size(); }

 private:
  struct Node {
    uint64_t key_hash = 0, bytes = 0;
    int freq = 0;
    bool main = false;
    std::list<uint64_t>::iterator it;
  };
  void Unlink(const Node& n, uint64_t) {
    if (n.main) {
      main_.erase(n.it);
      main_bytes_ -= n.bytes;
    } else {
      small_.erase(n.it);
      small_bytes_ -= n.bytes;
    }
  }
  void Ghost(uint64_t key_hash) {
    ghost_.push_back(key_hash);
    ghost_set_.insert(key_hash);
    // The ghost remembers as many keys as the cache holds entries.
    while (ghost_.size() > std::max<size_t>(nodes_.size(), 16)) {
      ghost_set_.erase(ghost_.front());
      ghost_.pop_front();
    }
  }

  uint64_t small_cap_;
  uint64_t small_bytes_ = 0, main_bytes_ = 0;
  std::list<uint64_t> small_, main_;  // front = oldest
  std::list<uint64_t> ghost_;
  std::unordered_set<uint64_t> ghost_set_;
  std::unordered_map<uint64_t, Node> nodes_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(const std::string& name, uint64_t capacity_bytes) {
  if (name == "lru") return std::unique_ptr<EvictionPolicy>(new LruPolicy());
  if (name == "s3fifo") return std::unique_ptr<EvictionPolicy>(new S3FifoPolicy(capacity_bytes));
  return absl::InvalidArgumentError(absl::StrCat("unknown eviction policy '", name, "' (lru, s3fifo)"));
}

}  // namespace kvrecall
