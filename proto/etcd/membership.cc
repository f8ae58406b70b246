#include "proto/etcd/membership.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "proto/etcd/etcd_v3.grpc.pb.h"
#include "proto/grpc_status.h"

namespace kvrecall {
namespace {

std::string PrefixEnd(std::string p) {
  for (int i = static_cast<int>(p.size()) - 1; i >= 0; --i) {
    if (static_cast<unsigned char>(p[i]) < 0xff) {
      p[i] = static_cast<char>(p[i] + 1);
      p.resize(i + 1);
      return p;
    }
  }
  return std::string(1, '\0');  // all of the keyspace
}

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  return c;
}

// Sleeps up to `d` or until stopped; returns false when stopped.
class Stopper {
 public:
  bool Sleep(absl::Duration d) {
    std::unique_lock<std::mutex> l(mu_);
    return !cv_.wait_for(l, absl::ToChronoNanoseconds(d), [&] { return stop_; });
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
  }
  bool stopped() {
    std::lock_guard<std::mutex> l(mu_);
    return stop_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

class RegistrationImpl final : public EtcdRegistration {
 public:
  RegistrationImpl(std::shared_ptr<grpc::Channel> ch, std::string key, std::string value, int ttl)
      : kv_(etcdserverpb::KV::NewStub(ch)), lease_(etcdserverpb::Lease::NewStub(ch)), key_(std::move(key)),
        value_(std::move(value)), ttl_(ttl) {}
  ~RegistrationImpl() override { Stop(); }

  absl::Status Register(absl::Duration timeout) {
    etcdserverpb::LeaseGrantRequest g;
    g.set_ttl(ttl_);
    etcdserverpb::LeaseGrantResponse gr;
    grpc::Status s = lease_->LeaseGrant(Ctx(timeout).get(), g, &gr);
    if (!s.ok()) return FromGrpcStatus(s);
    if (!gr.error().empty()) return absl::UnavailableError(absl::StrCat("etcd lease: ", gr.error()));
    etcdserverpb::PutRequest p;
    p.set_key(key_);
    p.set_value(value_);
    p.set_lease(gr.id());
    etcdserverpb::PutResponse pr;
    s = kv_->Put(Ctx(timeout).get(), p, &pr);
    if (!s.ok()) return FromGrpcStatus(s);
    lease_id_ = gr.id();
    return absl::OkStatus();
  }

  void Run() {
    thread_ = std::thread([this] {
      while (!stop_.stopped()) {
        // Keep the lease alive on one stream until it breaks or expires.
        grpc::ClientContext ctx;
        {
          std::lock_guard<std::mutex> l(ctx_mu_);
          stream_ctx_ = &ctx;
        }
        auto stream = lease_->LeaseKeepAlive(&ctx);
        bool lost = false;
        while (!stop_.stopped()) {
          etcdserverpb::LeaseKeepAliveRequest r;
          r.set_id(lease_id_);
          etcdserverpb::LeaseKeepAliveResponse resp;
          if (!stream->Write(r) || !stream->Read(&resp)) break;
          if (resp.ttl() <= 0) {
            lost = true;
            break;
          }
          if (!stop_.Sleep(absl::Seconds(std::max(1, ttl_ / 3)))) break;
        }
        {
          std::lock_guard<std::mutex> l(ctx_mu_);
          stream_ctx_ = nullptr;
        }
        ctx.TryCancel();
        (void)stream->Finish();
        if (stop_.stopped()) break;
        (void)lost;
        // The stream broke or the lease expired: register again.
        while (!stop_.stopped() && !Register(absl::Seconds(2)).ok()) stop_.Sleep(absl::Seconds(1));
      }
    });
  }

  void Stop() override {
    if (!thread_.joinable()) return;
    stop_.Stop();
    {
      std::lock_guard<std::mutex> l(ctx_mu_);
      if (stream_ctx_) stream_ctx_->TryCancel();
    }
    thread_.join();
    etcdserverpb::LeaseRevokeRequest r;
    r.set_id(lease_id_);
    etcdserverpb::LeaseRevokeResponse rr;
    (void)lease_->LeaseRevoke(Ctx(absl::Seconds(2)).get(), r, &rr);
  }

 private:
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease_;
  std::string key_, value_;
  int ttl_;
  int64_t lease_id_ = 0;
  Stopper stop_;
  std::thread thread_;
  std::mutex ctx_mu_;
  grpc::ClientContext* stream_ctx_ = nullptr;
};

class MembershipImpl final : public EtcdMembership {
 public:
  MembershipImpl(std::shared_ptr<grpc::Channel> ch, std::string prefix, std::function<void(const MemberMap&)> cb)
      : kv_(etcdserverpb::KV::NewStub(ch)), watch_(etcdserverpb::Watch::NewStub(ch)), prefix_(std::move(prefix)),
        cb_(std::move(cb)) {}
  ~MembershipImpl() override {
    stop_.Stop();
    {
      std::lock_guard<std::mutex> l(ctx_mu_);
      if (stream_ctx_) stream_ctx_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }

  MemberMap members() const override {
    std::lock_guard<std::mutex> l(mu_);
    return members_;
  }

  // Reads the whole prefix; returns the revision to watch from.
  absl::StatusOr<int64_t> Snapshot(absl::Duration timeout) {
    etcdserverpb::RangeRequest r;
    r.set_key(prefix_);
    r.set_range_end(PrefixEnd(prefix_));
    etcdserverpb::RangeResponse resp;
    grpc::Status s = kv_->Range(Ctx(timeout).get(), r, &resp);
    if (!s.ok()) return FromGrpcStatus(s);
    MemberMap m;
    for (const auto& kv : resp.kvs()) m[kv.key().substr(prefix_.size())] = kv.value();
    Publish(std::move(m));
    return resp.header().revision();
  }

  void Run(int64_t revision) {
    thread_ = std::thread([this, revision]() mutable {
      while (!stop_.stopped()) {
        grpc::ClientContext ctx;
        {
          std::lock_guard<std::mutex> l(ctx_mu_);
          stream_ctx_ = &ctx;
        }
        auto stream = watch_->Watch(&ctx);
        etcdserverpb::WatchRequest req;
        req.mutable_create_request()->set_key(prefix_);
        req.mutable_create_request()->set_range_end(PrefixEnd(prefix_));
        req.mutable_create_request()->set_start_revision(revision + 1);
        if (stream->Write(req)) {
          etcdserverpb::WatchResponse resp;
          while (stream->Read(&resp)) {
            if (resp.canceled()) break;
            if (resp.events_size() == 0) continue;
            MemberMap m = members();
            for (const auto& e : resp.events()) {
              const std::string k = e.kv().key().substr(std::min(prefix_.size(), e.kv().key().size()));
              if (e.type() == etcdserverpb::Event::PUT) m[k] = e.kv().value();
              else m.erase(k);
              revision = std::max(revision, e.kv().mod_revision());
            }
            revision = std::max(revision, resp.header().revision());
            Publish(std::move(m));
          }
        }
        {
          std::lock_guard<std::mutex> l(ctx_mu_);
          stream_ctx_ = nullptr;
        }
        ctx.TryCancel();
        (void)stream->Finish();
        // etcd went away or compacted: keep the last members, re-read when back.
        while (stop_.Sleep(absl::Milliseconds(500))) {
          absl::StatusOr<int64_t> rev = Snapshot(absl::Seconds(2));
          if (rev.ok()) {
            revision = *rev;
            break;
          }
        }
      }
    });
  }

 private:
  void Publish(MemberMap m) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (m == members_) return;
      members_ = m;
    }
    if (cb_) cb_(m);
  }

  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch_;
  std::string prefix_;
  std::function<void(const MemberMap&)> cb_;
  mutable std::mutex mu_;
  MemberMap members_;
  Stopper stop_;
  std::thread thread_;
  std::mutex ctx_mu_;
  grpc::ClientContext* stream_ctx_ = nullptr;
};

std::shared_ptr<grpc::Channel> Channel(const std::string& endpoint) {
  return grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdRegistration>> EtcdRegistration::Start(const std::string& endpoint,
                                                                           const std::string& key,
                                                                           const std::string& value, int ttl_seconds,
                                                                           absl::Duration timeout) {
  if (ttl_seconds < 1) return absl::InvalidArgumentError("etcd lease TTL must be >= 1 s");
  auto r = std::make_unique<RegistrationImpl>(Channel(endpoint), key, value, ttl_seconds);
  if (absl::Status s = r->Register(timeout); !s.ok()) {
    return absl::UnavailableError(absl::StrCat("etcd at ", endpoint, ": ", s.message()));
  }
  r->Run();
  return std::unique_ptr<EtcdRegistration>(std::move(r));
}

absl::StatusOr<std::unique_ptr<EtcdMembership>> EtcdMembership::Start(const std::string& endpoint,
                                                                      const std::string& prefix,
                                                                      std::function<void(const MemberMap&)> on_change,
                                                                      absl::Duration timeout) {
  auto m = std::make_unique<MembershipImpl>(Channel(endpoint), prefix, std::move(on_change));
  absl::StatusOr<int64_t> rev = m->Snapshot(timeout);
  if (!rev.ok()) return absl::UnavailableError(absl::StrCat("etcd at ", endpoint, ": ", rev.status().message()));
  m->Run(*rev);
  return std::unique_ptr<EtcdMembership>(std::move(m));
}

}  // namespace kvrecall
