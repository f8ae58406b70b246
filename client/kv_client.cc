#include "client/kv_client.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <algorithm>
#include <map>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/placement.h"
#include "client/store_stub.h"
#include "codec/attention.h"
#include "common/env.h"
#include "common/thread_pool.h"
#include "common/ucx_transport.h"
#include "proto/etcd/membership.h"
#include "store/block_store.h"
#include "store/metrics.h"
#include "store/service.h"

namespace kvrecall {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kEmbeddedToken[] = "kvrecall-embedded-namespace";

// A connection: the stub borrows the transport; shared so a call in
// flight keeps it alive while another thread replaces a failed one.
struct Conn {
  std::unique_ptr<ClientTransport> transport;
  std::unique_ptr<StoreStub> stub;
};

// One store node: its connection (made lazily) and its health.
struct NodeConn {
  std::string address;
  std::mutex mu;
  std::shared_ptr<Conn> conn;
  Clock::time_point down_until{};
};

// The members in force: placement and their connections, swapped whole
// when membership changes; operations work on the snapshot they started with.
struct View {
  Placement placement{{}};
  std::vector<std::shared_ptr<NodeConn>> nodes;
};

class KvClientImpl final : public KvClient {
 public:
  explicit KvClientImpl(const Options& o) : opts_(o), pool_(o.io_threads) {}

  absl::Status Init() {
    if (opts_.replicas < 1) return absl::InvalidArgumentError("replicas must be >= 1");
    if (opts_.nodes.empty() && opts_.etcd_endpoint.empty()) {
      StoreOptions so;
      so.host_bytes = opts_.embedded_host_bytes;
      so.ssd_path = opts_.embedded_ssd_path;
      so.ssd_bytes = opts_.embedded_ssd_bytes;
      absl::StatusOr<std::unique_ptr<BlockStore>> s =
          BlockStore::Open(so, {{"embedded", kEmbeddedToken, so.host_bytes, opts_.namespace_salt}});
      if (!s.ok()) return s.status();
      store_ = std::move(*s);
      service_ = std::make_unique<StoreService>(store_.get(), Env::Default());
      auto n = std::make_shared<NodeConn>();
      n->address = "embedded";
      n->conn = std::make_shared<Conn>();
      n->conn->transport = NewInProcessTransport(service_.get());
      n->conn->stub = std::make_unique<StoreStub>(n->conn->transport.get(), kEmbeddedToken, opts_.timeout);
      auto v = std::make_shared<View>();
      v->placement = Placement({{"embedded", 1.0}});
      v->nodes.push_back(std::move(n));
      view_ = v;
      opts_.replicas = 1;
      return absl::OkStatus();
    }
    if (opts_.namespace_token.empty()) return absl::InvalidArgumentError("a namespace token is needed for remote stores");
    for (const Node& n : opts_.nodes) {
      if (!(n.weight > 0)) return absl::InvalidArgumentError(absl::StrCat("node ", n.address, " needs a positive weight"));
    }
    SetMembers(opts_.nodes);
    if (!opts_.etcd_endpoint.empty()) {
      absl::StatusOr<std::unique_ptr<EtcdMembership>> m = EtcdMembership::Start(
          opts_.etcd_endpoint, opts_.etcd_prefix, [this](const MemberMap& members) { OnMembers(members); });
      if (!m.ok()) return m.status();
      membership_ = std::move(*m);
      OnMembers(membership_->members());
    }
    return absl::OkStatus();
  }

  ~KvClientImpl() override { membership_.reset(); }

  std::string namespace_salt() const override { return opts_.namespace_salt; }
  bool embedded() const override { return store_ != nullptr; }

  void OnMembers(const MemberMap& members) {
    std::vector<Node> nodes;
    for (const auto& [address, value] : members) {
      double w = 1.0;
      if (!absl::SimpleAtod(value, &w) || !(w > 0)) w = 1.0;
      nodes.push_back({address, w});
    }
    for (const Node& n : opts_.nodes) nodes.push_back(n);  // static members stay
    SetMembers(nodes);
    ++membership_changes_;
  }

  // Builds and installs a view; nodes new to it are tried at once even if
  // they were marked down before (a node back from the dead).
  void SetMembers(const std::vector<Node>& nodes) {
    std::lock_guard<std::mutex> l(view_mu_);
    auto v = std::make_shared<View>();
    std::vector<PlacementNode> pn;
    std::map<std::string, bool> was;
    if (view_) {
      for (const auto& n : view_->nodes) was[n->address] = true;
    }
    for (const Node& n : nodes) {
      if (std::any_of(pn.begin(), pn.end(), [&](const PlacementNode& p) { return p.id == n.address; })) continue;
      std::shared_ptr<NodeConn>& c = conns_[n.address];
      if (!c) c = std::make_shared<NodeConn>(), c->address = n.address;
      if (!was.count(n.address)) {
        std::lock_guard<std::mutex> cl(c->mu);
        c->down_until = Clock::time_point{};
      }
      v->nodes.push_back(c);
      pn.push_back({n.address, n.weight});
    }
    v->placement = Placement(std::move(pn));
    view_ = v;
  }

  std::shared_ptr<const View> Snapshot() const {
    std::lock_guard<std::mutex> l(view_mu_);
    return view_;
  }

  std::future<std::vector<absl::Status>> Save(std::vector<BlockKey> keys,
                                              std::vector<absl::Span<const uint8_t>> blocks) override {
    return pool_.Submit([this, keys = std::move(keys), blocks = std::move(blocks)]() {
      const std::shared_ptr<const View> view = Snapshot();
      std::vector<absl::Status> out(keys.size(), absl::UnavailableError("no node took the block"));
      if (keys.size() != blocks.size()) {
        out.assign(keys.size(), absl::InvalidArgumentError("one block per key"));
        return out;
      }
      saves_ += keys.size();
      ForEachNode(*view, keys, nullptr, [&](StoreStub& stub, const std::vector<size_t>& idx, int r) {
        std::vector<BlockKey> k;
        ConstIov iov;
        for (size_t i : idx) k.push_back(keys[i]), iov.push_back(blocks[i]);
        absl::StatusOr<std::vector<absl::Status>> res = stub.Put(k, iov, false);
        if (!res.ok()) return FailItems(res.status(), idx, &out);
        for (size_t j = 0; j < idx.size(); ++j) {
          // OK once any copy is stored; otherwise the owner's error.
          if ((*res)[j].ok() || (r == 0 && !out[idx[j]].ok())) out[idx[j]] = (*res)[j];
        }
        return absl::OkStatus();
      });
      return out;
    });
  }

  std::future<absl::StatusOr<int>> LookupPrefix(std::vector<BlockKey> chain) override {
    return pool_.Submit([this, chain = std::move(chain)]() -> absl::StatusOr<int> {
      const std::shared_ptr<const View> view = Snapshot();
      std::vector<bool> present(chain.size(), false);
      ForEachNode(*view, chain, &present, [&](StoreStub& stub, const std::vector<size_t>& idx, int) {
        std::vector<BlockKey> k;
        for (size_t i : idx) k.push_back(chain[i]);
        absl::StatusOr<StoreStub::ExistsReply> e = stub.Exists(k);
        if (!e.ok()) return e.status();
        for (size_t j = 0; j < idx.size(); ++j) present[idx[j]] = present[idx[j]] || e->present[j];
        return absl::OkStatus();
      });
      int prefix = 0;
      while (prefix < static_cast<int>(chain.size()) && present[prefix]) ++prefix;
      return prefix;
    });
  }

  std::future<std::vector<absl::StatusOr<size_t>>> Load(std::vector<BlockKey> keys,
                                                        std::vector<absl::Span<uint8_t>> dst) override {
    return pool_.Submit([this, keys = std::move(keys), dst = std::move(dst)]() {
      const std::shared_ptr<const View> view = Snapshot();
      std::vector<absl::StatusOr<size_t>> out(keys.size(), absl::NotFoundError("miss"));
      if (keys.size() != dst.size()) {
        out.assign(keys.size(), absl::InvalidArgumentError("one buffer per key"));
        return out;
      }
      loads_ += keys.size();
      std::vector<bool> done(keys.size(), false);
      ForEachNode(*view, keys, &done, [&](StoreStub& stub, const std::vector<size_t>& idx, int) {
        std::vector<BlockKey> k;
        MutableIov d;
        for (size_t i : idx) k.push_back(keys[i]), d.push_back(dst[i]);
        auto res = stub.Get(k, d);
        if (!res.ok()) return FailItems(res.status(), idx, &out);
        for (size_t j = 0; j < idx.size(); ++j) {
          const absl::StatusOr<size_t>& got = (*res)[j];
          if (got.ok()) {
            out[idx[j]] = got, done[idx[j]] = true;
          } else if (got.status().code() == absl::StatusCode::kOutOfRange) {
            out[idx[j]] = got.status(), done[idx[j]] = true;
          } else if (got.status().code() == absl::StatusCode::kDataLoss) {
            ++verify_failures_;  // a bad copy reads as a miss
          }
        }
        return absl::OkStatus();
      });
      for (const auto& o : out) o.ok() ? ++hits_ : ++misses_;
      return out;
    });
  }

  std::future<std::vector<absl::Status>> Delete(std::vector<BlockKey> keys) override {
    return pool_.Submit([this, keys = std::move(keys)]() {
      const std::shared_ptr<const View> view = Snapshot();
      std::vector<absl::Status> out(keys.size(), absl::NotFoundError("absent"));
      ForEachNode(*view, keys, nullptr, [&](StoreStub& stub, const std::vector<size_t>& idx, int) {
        std::vector<BlockKey> k;
        for (size_t i : idx) k.push_back(keys[i]);
        auto res = stub.Delete(k);
        if (!res.ok()) return res.status();
        for (size_t j = 0; j < idx.size(); ++j) {
          if ((*res)[j].ok()) out[idx[j]] = absl::OkStatus();
        }
        return absl::OkStatus();
      });
      return out;
    });
  }

  std::future<std::vector<absl::StatusOr<std::vector<float>>>> Gather(std::vector<GatherItem> items) override {
    return pool_.Submit([this, items = std::move(items)]() {
      const std::shared_ptr<const View> view = Snapshot();
      std::vector<absl::StatusOr<std::vector<float>>> out(items.size(), absl::NotFoundError("miss"));
      std::vector<BlockKey> keys;
      for (const auto& g : items) keys.push_back(g.key);
      std::vector<bool> done(items.size(), false);
      ForEachNode(*view, keys, &done, [&](StoreStub& stub, const std::vector<size_t>& idx, int) {
        std::vector<GatherRequestItem> req;
        for (size_t i : idx) req.push_back({items[i].key, items[i].rows});
        auto res = stub.Gather(req);
        if (!res.ok()) return res.status();
        for (size_t j = 0; j < idx.size(); ++j) {
          if ((*res)[j].ok() || (*res)[j].status().code() == absl::StatusCode::kInvalidArgument) {
            out[idx[j]] = std::move((*res)[j]), done[idx[j]] = true;
          }
        }
        return absl::OkStatus();
      });
      return out;
    });
  }

  std::future<absl::StatusOr<std::vector<float>>> GatherSequence(SequenceRef seq, std::vector<int64_t> rows) override {
    // Rows grouped by block; each block gathered once; rows put back in order.
    std::vector<GatherItem> items;
    std::map<int64_t, size_t> item_of;
    std::vector<std::pair<size_t, uint32_t>> where;  // (item, index within the item's rows)
    for (int64_t r : rows) {
      const int64_t b = seq.block_tokens > 0 && r >= 0 ? r / seq.block_tokens : -1;
      auto it = item_of.find(b);
      if (it == item_of.end()) {
        it = item_of.emplace(b, items.size()).first;
        items.push_back({SequenceBlockKey(seq.fingerprint, opts_.namespace_salt, seq.sequence_id, seq.layer_begin,
                                          seq.layer_count, b),
                         {}});
      }
      where.push_back({it->second, static_cast<uint32_t>(items[it->second].rows.size())});
      items[it->second].rows.push_back(static_cast<uint32_t>(seq.block_tokens > 0 ? r % seq.block_tokens : 0));
    }
    const bool bad = seq.block_tokens < 1 || seq.layer_count < 1 || seq.kv_heads < 1 || seq.head_dim < 1 ||
                     std::any_of(rows.begin(), rows.end(), [](int64_t r) { return r < 0; });
    auto parts = bad ? std::future<std::vector<absl::StatusOr<std::vector<float>>>>() : Gather(items);
    return pool_.Submit([bad, seq, items, where, parts = std::move(parts)]() mutable -> absl::StatusOr<std::vector<float>> {
      if (bad) return absl::InvalidArgumentError("bad sequence reference or negative row");
      std::vector<absl::StatusOr<std::vector<float>>> got = parts.get();
      const size_t row_floats = size_t(seq.kv_heads) * seq.head_dim;  // per layer
      const size_t n = where.size(), L = size_t(seq.layer_count);
      std::vector<float> out(2 * L * seq.kv_heads * n * seq.head_dim);
      for (size_t i = 0; i < items.size(); ++i) {
        if (!got[i].ok()) return got[i].status();
        if (got[i]->size() != 2 * L * row_floats * items[i].rows.size()) {
          return absl::DataLossError("gathered rows do not match the sequence layout");
        }
      }
      const size_t per_out = L * seq.kv_heads * n * seq.head_dim;
      for (size_t j = 0; j < n; ++j) {
        const auto [item, idx] = where[j];
        const size_t m = items[item].rows.size();
        const std::vector<float>& src = *got[item];
        const size_t per_src = L * seq.kv_heads * m * seq.head_dim;
        for (size_t kv = 0; kv < 2; ++kv)
          for (size_t lh = 0; lh < L * seq.kv_heads; ++lh)
            std::copy_n(src.data() + kv * per_src + (lh * m + idx) * seq.head_dim, seq.head_dim,
                        out.data() + kv * per_out + (lh * n + j) * seq.head_dim);
      }
      return out;
    });
  }

  std::future<absl::StatusOr<AttendResult>> Attend(std::vector<GatherItem> items, int group, float scale,
                                                   std::vector<float> queries, int head_dim) override {
    return pool_.Submit([this, items = std::move(items), group, scale, queries = std::move(queries),
                         head_dim]() -> absl::StatusOr<AttendResult> {
      if (items.empty() || head_dim < 1 || queries.size() % size_t(head_dim) != 0) {
        return absl::InvalidArgumentError("attend: no items or bad query shape");
      }
      const std::shared_ptr<const View> view = Snapshot();
      AttendResult acc;
      acc.out.assign(queries.size(), 0.0f);
      acc.lse.assign(queries.size() / head_dim, -INFINITY);
      std::vector<BlockKey> keys;
      for (const auto& g : items) keys.push_back(g.key);
      std::vector<bool> done(items.size(), false);
      absl::Status last = absl::NotFoundError("no node holds the rows");
      ForEachNode(*view, keys, &done, [&](StoreStub& stub, const std::vector<size_t>& idx, int) {
        std::vector<GatherRequestItem> req;
        for (size_t i : idx) req.push_back({items[i].key, items[i].rows});
        absl::StatusOr<StoreStub::AttendResult> part = stub.Attend(req, group, scale, queries, head_dim);
        if (!part.ok()) {
          last = part.status();
          // A missing block is a miss on this node (try its replicas), not a failed node.
          return part.status().code() == absl::StatusCode::kNotFound ||
                         part.status().code() == absl::StatusCode::kInvalidArgument
                     ? absl::OkStatus()
                     : part.status();
        }
        for (size_t q = 0; q < acc.lse.size(); ++q) {
          MergeAttention(acc.out.data() + q * head_dim, &acc.lse[q], part->out.data() + q * head_dim, part->lse[q],
                         head_dim);
        }
        for (size_t i : idx) done[i] = true;
        return absl::OkStatus();
      });
      for (bool d : done) {
        if (!d) return last;
      }
      return acc;
    });
  }

  std::future<absl::Status> ReportRecall(BlockKey route, std::vector<RecallSample> samples) override {
    return pool_.Submit([this, route, samples = std::move(samples)]() -> absl::Status {
      std::vector<kvrecall::RecallSample> wire;
      for (const RecallSample& x : samples) wire.push_back({x.topk_recall, x.mass_recall, x.output_error});
      if (wire.empty()) return absl::OkStatus();
      const std::shared_ptr<const View> view = Snapshot();
      std::vector<bool> done(1, false);
      absl::Status result = absl::UnavailableError("no node took the recall report");
      ForEachNode(*view, {route}, &done, [&](StoreStub& stub, const std::vector<size_t>&, int) {
        for (size_t i = 0; i < wire.size(); i += kMaxRecallSamples) {
          const std::vector<kvrecall::RecallSample> part(
              wire.begin() + i, wire.begin() + std::min<size_t>(wire.size(), i + kMaxRecallSamples));
          result = stub.ReportRecall(part);
          // Refused samples are the caller's error, not the node's.
          if (result.code() == absl::StatusCode::kInvalidArgument || IsAuthError(result)) return absl::OkStatus();
          if (!result.ok()) return result;
        }
        done[0] = true;
        return absl::OkStatus();
      });
      return result;
    });
  }

  std::string EmbeddedMetrics() const override {
    if (!store_) return "";
    return FormatPrometheus(store_->Stats(), service_->Stats());
  }

  absl::Status RegisterBuffer(absl::Span<uint8_t> buffer) override {
    const std::shared_ptr<const View> view = Snapshot();
    for (int i = 0; i < static_cast<int>(view->nodes.size()); ++i) {
      const std::shared_ptr<Conn> conn = Connection(*view, i);
      if (conn == nullptr) continue;  // a node that is down registers when it is back (on first use)
      if (absl::Status s = conn->transport->RegisterMemory(buffer); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  Stats stats() const override {
    Stats s;
    s.saves = saves_, s.loads = loads_, s.hits = hits_, s.misses = misses_;
    s.node_failures = node_failures_, s.verify_failures = verify_failures_;
    s.membership_changes = membership_changes_;
    s.nodes = static_cast<int>(Snapshot()->nodes.size());
    return s;
  }

 private:
  // For each replica rank and each node holding rank-r copies of keys not
  // yet `done`: fn(stub, indices, r) makes the call; a failed call marks the
  // node down (its keys then read as misses).
  template <typename Fn>
  void ForEachNode(const View& v, const std::vector<BlockKey>& keys, const std::vector<bool>* done, Fn fn) {
    for (int r = 0; r < opts_.replicas; ++r) {
      for (const auto& [node, idx] : Group(v, keys, r, done)) {
        const std::shared_ptr<Conn> conn = Connection(v, node);
        if (conn == nullptr) continue;
        if (absl::Status s = fn(*conn->stub, idx, r); !s.ok()) MarkDown(v, node, s);
      }
    }
  }

  // A whole call failed: refused credentials become the items' status (an
  // error, not a miss); the call's status is passed on.
  template <typename T>
  static absl::Status FailItems(const absl::Status& s, const std::vector<size_t>& idx, std::vector<T>* out) {
    if (IsAuthError(s)) {
      for (size_t i : idx) (*out)[i] = s;
    }
    return s;
  }

  // Keys (not yet `done`) grouped by their rank-r node.
  std::map<int, std::vector<size_t>> Group(const View& v, const std::vector<BlockKey>& keys, int r,
                                           const std::vector<bool>* done) const {
    std::map<int, std::vector<size_t>> g;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (done && (*done)[i]) continue;
      const std::vector<int> rank = v.placement.Rank(keys[i], r + 1);
      if (static_cast<int>(rank.size()) > r) g[rank[r]].push_back(i);
    }
    return g;
  }

  // The node's connection, made if needed; null while it is marked down.
  std::shared_ptr<Conn> Connection(const View& v, int i) {
    NodeConn& n = *v.nodes[i];
    std::lock_guard<std::mutex> l(n.mu);
    if (n.conn) return n.conn;
    if (Clock::now() < n.down_until) return nullptr;
    UcxClientOptions uo;
    uo.connect_timeout = opts_.timeout;
    absl::StatusOr<std::unique_ptr<ClientTransport>> t = ConnectUcx(n.address, uo);
    if (!t.ok()) {
      ++node_failures_;
      n.down_until = Clock::now() + absl::ToChronoNanoseconds(opts_.down_backoff);
      return nullptr;
    }
    auto c = std::make_shared<Conn>();
    c->transport = std::move(*t);
    c->stub = std::make_unique<StoreStub>(c->transport.get(), opts_.namespace_token, opts_.timeout);
    n.conn = c;
    return c;
  }

  static bool IsAuthError(const absl::Status& s) {
    return s.code() == absl::StatusCode::kUnauthenticated || s.code() == absl::StatusCode::kPermissionDenied;
  }

  // A failed call: auth errors are the caller's; transport errors take the
  // node out for the backoff (its connection is rebuilt after).
  void MarkDown(const View& v, int i, const absl::Status& s) {
    const absl::StatusCode c = s.code();
    if (c == absl::StatusCode::kUnauthenticated || c == absl::StatusCode::kPermissionDenied ||
        c == absl::StatusCode::kInvalidArgument) {
      return;
    }
    ++node_failures_;
    if (store_) return;  // the embedded store does not go away
    NodeConn& n = *v.nodes[i];
    std::lock_guard<std::mutex> l(n.mu);
    n.conn.reset();
    n.down_until = Clock::now() + absl::ToChronoNanoseconds(opts_.down_backoff);
  }

  Options opts_;
  std::unique_ptr<BlockStore> store_;
  std::unique_ptr<StoreService> service_;
  mutable std::mutex view_mu_;
  std::shared_ptr<const View> view_;
  std::map<std::string, std::shared_ptr<NodeConn>> conns_;  // every node ever seen, by address
  std::unique_ptr<EtcdMembership> membership_;
  std::atomic<uint64_t> membership_changes_{0};
  ThreadPool pool_;  // last: destroyed first, finishing tasks that use the above
  std::atomic<uint64_t> saves_{0}, loads_{0}, hits_{0}, misses_{0}, node_failures_{0}, verify_failures_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvClient>> KvClient::Create(const Options& options) {
  auto c = std::make_unique<KvClientImpl>(options);
  if (absl::Status s = c->Init(); !s.ok()) return s;
  return std::unique_ptr<KvClient>(std::move(c));
}

}  // namespace kvrecall
