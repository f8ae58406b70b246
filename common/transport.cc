#include "common/transport.h"

#include <atomic>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace kvrecall {
namespace {

// Copies a gathered source into a scattered destination of the same total.
absl::Status CopyIov(const ConstIov& src, const MutableIov& dst) {
  if (IovBytes(src) != IovBytes(dst)) {
    return absl::InvalidArgumentError(absl::StrCat("payload of ", IovBytes(src), " bytes into buffers of ", IovBytes(dst)));
  }
  size_t di = 0, doff = 0;
  for (const auto& s : src) {
    size_t soff = 0;
    while (soff < s.size()) {
      while (doff == dst[di].size()) ++di, doff = 0;
      const size_t n = std::min(s.size() - soff, dst[di].size() - doff);
      std::memcpy(dst[di].data() + doff, s.data() + soff, n);
      soff += n, doff += n;
    }
  }
  return absl::OkStatus();
}

class InProcessTransport final : public ClientTransport {
 public:
  explicit InProcessTransport(RequestHandler* h) : handler_(h) {}
  std::string peer() const override { return "inproc"; }
  absl::StatusOr<std::string> Call(CallArgs args) override {
    const auto* head = reinterpret_cast<const uint8_t*>(args.head.data());
    std::unique_ptr<Exchange> ex = handler_->Begin({head, args.head.size()}, IovBytes(args.payload));
    MutableIov dst = ex->PayloadDestination();
    absl::Status moved = absl::OkStatus();
    if (!dst.empty()) moved = CopyIov(args.payload, dst);
    ex->Finish(moved);
    const absl::string_view rh = ex->reply_head();
    const ConstIov rp = ex->reply_payload();
    std::string reply(rh);
    const uint64_t n = IovBytes(rp);
    if (args.sink) {
      absl::StatusOr<MutableIov> sink = args.sink({reinterpret_cast<const uint8_t*>(reply.data()), reply.size()}, n);
      if (!sink.ok()) return sink.status();
      if (n > 0) {
        absl::Status s = CopyIov(rp, *sink);
        if (!s.ok()) return s;
      }
    } else if (n > 0) {
      return absl::InvalidArgumentError("reply has a payload and the call no sink");
    }
    return reply;
  }

 private:
  RequestHandler* handler_;
};

class FaultInjectingTransport final : public ClientTransport {
 public:
  FaultInjectingTransport(std::unique_ptr<ClientTransport> inner, FaultPlan plan)
      : inner_(std::move(inner)), plan_(plan) {}
  std::string peer() const override { return inner_->peer(); }

  absl::StatusOr<std::string> Call(CallArgs args) override {
    const uint64_t index = ++calls_;
    bool hit = false;
    if (plan_.nth > 0) {
      hit = index == plan_.nth;
    } else if (plan_.one_in > 0) {
      uint64_t x[2] = {plan_.seed, index};
      hit = Checksum64(x, sizeof(x)) % plan_.one_in == 0;
    }
    if (!hit || plan_.kind == FaultPlan::Kind::kNone) return inner_->Call(std::move(args));
    ++injected_;
    switch (plan_.kind) {
      case FaultPlan::Kind::kDrop:
        return absl::DeadlineExceededError(absl::StrCat("no reply from ", peer(), " (dropped message ", index, ")"));
      case FaultPlan::Kind::kFail:
        return absl::UnavailableError(absl::StrCat("connection to ", peer(), " failed (injected, message ", index, ")"));
      case FaultPlan::Kind::kDelay:
        if (plan_.delay > args.timeout) {
          std::this_thread::sleep_for(absl::ToChronoNanoseconds(args.timeout));
          return absl::DeadlineExceededError("reply later than the deadline (injected delay)");
        }
        std::this_thread::sleep_for(absl::ToChronoNanoseconds(plan_.delay));
        return inner_->Call(std::move(args));
      case FaultPlan::Kind::kCorrupt: {
        uint64_t x[2] = {plan_.seed ^ 0x5eed, index};
        const uint64_t r = Checksum64(x, sizeof(x));
        if (!plan_.corrupt_reply) {
          // Corrupt a copy of the request payload (the caller's buffers stay intact).
          if (IovBytes(args.payload) == 0) return inner_->Call(std::move(args));
          std::string copy;
          for (const auto& s : args.payload) copy.append(reinterpret_cast<const char*>(s.data()), s.size());
          copy[r % copy.size()] ^= static_cast<char>(1 + (r >> 32) % 255);
          args.payload = {{reinterpret_cast<const uint8_t*>(copy.data()), copy.size()}};
          return inner_->Call(std::move(args));
        }
        auto sink = args.sink;
        MutableIov got;
        args.sink = [&, sink](absl::Span<const uint8_t> head, uint64_t n) -> absl::StatusOr<MutableIov> {
          if (!sink) return MutableIov{};
          absl::StatusOr<MutableIov> d = sink(head, n);
          if (d.ok()) got = *d;
          return d;
        };
        absl::StatusOr<std::string> reply = inner_->Call(std::move(args));
        const uint64_t n = IovBytes(got);
        if (reply.ok() && n > 0) {
          uint64_t at = r % n;
          for (auto& s : got) {
            if (at < s.size()) {
              s[at] ^= static_cast<uint8_t>(1 + (r >> 32) % 255);
              break;
            }
            at -= s.size();
          }
        }
        return reply;
      }
      case FaultPlan::Kind::kNone:
        break;
    }
    return inner_->Call(std::move(args));
  }

 private:
  std::unique_ptr<ClientTransport> inner_;
  FaultPlan plan_;
  std::atomic<uint64_t> calls_{0}, injected_{0};
};

}  // namespace

std::unique_ptr<ClientTransport> NewInProcessTransport(RequestHandler* handler) {
  return std::make_unique<InProcessTransport>(handler);
}

std::unique_ptr<ClientTransport> NewFaultInjectingTransport(std::unique_ptr<ClientTransport> inner, FaultPlan plan) {
  return std::make_unique<FaultInjectingTransport>(std::move(inner), plan);
}

}  // namespace kvrecall
