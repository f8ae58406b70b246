// The data-plane transport: batched request/response exchanges with an
// optional bulk payload in each direction, moved between caller-chosen
// buffers (registered memory) without intermediate copies where the
// implementation can (UCX rendezvous; the in-process transport copies once,
// as a wire would).
//
// A call: the client sends `head` (protocol header + body, small) and
// `payload` (a list of spans, gathered); the server's handler sees the head,
// names where the payload goes (spans it owns, e.g. reserved arena space),
// is told when it arrived, and answers with a head and a payload list; the
// client's `sink` sees the reply head and names where that payload goes.
//
// Errors: UNAVAILABLE (peer unreachable, connection lost), DEADLINE_EXCEEDED
// (no reply in time), INVALID_ARGUMENT (sink buffers do not match the reply
// payload). Thread safety: ClientTransport::Call is thread-safe; handlers
// may be called from several transport threads at once.
#ifndef KVRECALL_COMMON_TRANSPORT_H_
#define KVRECALL_COMMON_TRANSPORT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace kvrecall {

using ConstIov = std::vector<absl::Span<const uint8_t>>;
using MutableIov = std::vector<absl::Span<uint8_t>>;

inline uint64_t IovBytes(const ConstIov& v) {
  uint64_t n = 0;
  for (const auto& s : v) n += s.size();
  return n;
}
inline uint64_t IovBytes(const MutableIov& v) {
  uint64_t n = 0;
  for (const auto& s : v) n += s.size();
  return n;
}

// Server side: one request/response exchange.
class Exchange {
 public:
  virtual ~Exchange() = default;
  // Where the request payload goes; total size = the payload's. Empty when
  // there is none or the request was refused (the payload is discarded).
  virtual MutableIov PayloadDestination() = 0;
  // The payload arrived (or failed to); compute the reply.
  virtual void Finish(const absl::Status& payload_status) = 0;
  // True when Finish does enough work (many blocks, attention) that a server
  // should run it on a worker thread rather than on its progress thread.
  // Finish must then be safe to run concurrently with other exchanges.
  virtual bool Heavy() const { return false; }
  // Valid after Finish, until the exchange is destroyed (after the send).
  virtual absl::string_view reply_head() const = 0;
  virtual ConstIov reply_payload() const = 0;
};

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // A request head arrived with `payload_len` bytes of payload to follow.
  // Never fails: malformed heads produce an exchange whose reply is an error.
  virtual std::unique_ptr<Exchange> Begin(absl::Span<const uint8_t> head, uint64_t payload_len) = 0;
};

struct CallArgs {
  std::string head;
  ConstIov payload;
  // Sees the reply head; returns where the reply payload goes (its total
  // must equal the payload length the head announces), or an error, which
  // discards the payload and fails the call.
  std::function<absl::StatusOr<MutableIov>(absl::Span<const uint8_t> reply_head, uint64_t payload_len)> sink;
  absl::Duration timeout = absl::Seconds(10);
};

class ClientTransport {
 public:
  virtual ~ClientTransport() = default;
  // Returns the reply head; the reply payload is in the sink's buffers.
  virtual absl::StatusOr<std::string> Call(CallArgs args) = 0;
  virtual std::string peer() const = 0;
  // Registers memory that payloads will come from or go to (zero-copy on
  // RDMA-capable transports; UCX otherwise registers on first use). OK and
  // a no-op where registration means nothing (in-process).
  virtual absl::Status RegisterMemory(absl::Span<uint8_t> region) {
    (void)region;
    return absl::OkStatus();
  }
};

// The in-process transport: calls the handler on the caller's thread.
std::unique_ptr<ClientTransport> NewInProcessTransport(RequestHandler* handler);

// Seeded fault injection (testonly use): for every message (request or
// reply) a deterministic decision from (seed, message index) — drop (the
// call fails with DEADLINE_EXCEEDED after its timeout is simulated, without
// waiting), delay, fail (UNAVAILABLE) or corrupt one payload byte — either
// for the Nth message or for 1 in N.
struct FaultPlan {
  enum class Kind { kNone, kDrop, kDelay, kFail, kCorrupt };
  Kind kind = Kind::kNone;
  uint64_t nth = 0;        // if > 0: only call number nth (1-based)
  uint64_t one_in = 0;     // else if > 0: each call with probability 1/one_in
  absl::Duration delay = absl::Milliseconds(10);
  uint64_t seed = 1;
  bool corrupt_reply = true;  // corrupt the reply payload (else the request's)
};
std::unique_ptr<ClientTransport> NewFaultInjectingTransport(std::unique_ptr<ClientTransport> inner, FaultPlan plan);

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_TRANSPORT_H_
